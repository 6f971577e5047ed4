#!/usr/bin/env bash
# The kernel tier (make test-kernels): weft's end-to-end kernel cases, run
# inside User-Mode Linux (hack/uml/run.sh) on kernels that have the modules
# this machine's kernel lacks, as a second kernel line beside the host's.
# Each line runs internal/e2e's test binary once, with -test.run selecting
# its cases; every test names its kernel in its output ("kernel 6.1.x").
#
#   debian   Debian's UML kernel (package user-mode-linux, 6.1, modules
#            loaded on demand; no WireGuard, no nftables nat chain type, so
#            iptables is legacy): ipip's kernel path (WEFT_IPIP_PATH=kernel)
#            with and without DirectRouting, kill -9 and restarts under a
#            100 Hz ping, flannel.ipip and its route deleted, beside
#            flanneld v0.28.9 in both orders; vxlan and host-gw's ping
#            matrix, restarts and repairs; masquerade with iptables
#   wg       the kernel hack/uml-kernel.sh builds (6.1, everything built
#            in, WireGuard too): WireGuard's kernel path
#            (WEFT_WIREGUARD_PATH=kernel): kill -9 under a 100 Hz ping,
#            peers removed and added by hand, a key changed, PSK, Modes
#            separate and auto dual-stack, beside flanneld v0.28.9's
#            wireguard backend in both orders; masquerade with nftables
#
#   hack/uml/test-kernels.sh [LINE...]     (default: every line)
#
# A line fails when its test binary fails, when a selected test skips (a
# kernel that lost a module would otherwise pass in silence), or when it
# ran no test. The summary at the end gives each line's kernel, counts and
# time.
#
# Needs root (hack/flannel-image.sh's buildah; the tests' namespaces are the
# UML kernel's, but the runner needs nothing of root itself). Installs
# user-mode-linux and kmod when missing; builds, once each and cached in
# ~/.cache/weft, the UML kernel (hack/uml-kernel.sh, 10-20 minutes cold)
# and flannel's image (hack/flannel-image.sh, whose flanneld the tests run
# beside weft); builds the e2e test binary into a temporary directory,
# removed at exit.
#
# Environment: WEFT_BIN_DIR (make build's ./bin), GO (go), WEFT_FLANNELD (a
# flanneld v0.28.9 binary to use instead of the one in flannel's image),
# WEFT_TEST_TIME_FACTOR (how much the tests stretch their time limits
# inside UML, default 10), WEFT_UML_TIMEOUT (seconds per line, default
# 2700).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
go="${GO:-go}"
bin="${WEFT_BIN_DIR:-$root/bin}"
factor="${WEFT_TEST_TIME_FACTOR:-10}"
line_timeout="${WEFT_UML_TIMEOUT:-2700}"

die() { echo "test-kernels: $*" >&2; exit 1; }

# name, kernel ("debian" or "built"), environment, -test.run
lines=(debian wg)
declare -A kernel_of=([debian]=debian [wg]=built)
declare -A env_of=([debian]=WEFT_IPIP_PATH=kernel [wg]=WEFT_WIREGUARD_PATH=kernel)
declare -A run_of=(
  [debian]='^(TestIPIPKernelPath|TestIPIPKernelRepair|TestIPIPBesideFlannel|TestPingMatrix|TestKillRestartLosesNoPing|TestRepairRestoresTraffic|TestMasquerade)$/^(plain|directrouting|weft-first|flannel-first|vxlan|vxlan-directrouting|host-gw|iptables)$'
  [wg]='^(TestWireGuardKernelPath|TestWireGuardPeersDesiredState|TestWireGuardKeyChange|TestWireGuardPSK|TestWireGuardDualStack|TestWireGuardBesideFlannel|TestPingMatrix|TestMasquerade)$/^(separate|auto|weft-first|flannel-first|wireguard|nftables)$'
)
if [ $# -gt 0 ]; then
  for l in "$@"; do [ -n "${kernel_of[$l]:-}" ] || die "no line '$l' (lines: ${lines[*]})"; done
  lines=("$@")
fi

[ -x "$bin/weftd" ] || die "no weftd in $bin: run make build first (or set WEFT_BIN_DIR)"
# shellcheck source=../lib/apt.sh
source "$root/hack/lib/apt.sh"
apt_ensure test-kernels linux.uml=user-mode-linux modprobe=kmod

built=""
for l in "${lines[@]}"; do
  if [ "${kernel_of[$l]}" = built ] && [ -z "$built" ]; then
    built="$(GO="$go" bash hack/uml-kernel.sh)/linux"
  fi
done
work="$(mktemp -d "${TMPDIR:-/tmp}/weft-test-kernels.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# flanneld, out of flannel's image (an OCI archive: one of its layers holds
# /opt/bin/flanneld), unless WEFT_FLANNELD names one.
flanneld="${WEFT_FLANNELD:-}"
if [ -z "$flanneld" ]; then
  flannel_dir="$(GO="$go" bash hack/flannel-image.sh)"
  mkdir "$work/oci"
  tar -xf "$flannel_dir/flannel.tar" -C "$work/oci"
  for blob in "$work"/oci/blobs/sha256/*; do
    member="$(tar -tf "$blob" 2>/dev/null | grep -m1 -E '^(\./)?opt/bin/flanneld$' || true)"
    if [ -n "$member" ]; then
      tar -xOf "$blob" "$member" >"$work/flanneld"
      break
    fi
  done
  [ -s "$work/flanneld" ] || die "no opt/bin/flanneld in $flannel_dir/flannel.tar"
  chmod +x "$work/flanneld"
  rm -rf "$work/oci"
  flanneld="$work/flanneld"
fi
echo "test-kernels: flanneld $("$flanneld" --version 2>&1) ($flanneld)"

# The runner itself (hack/uml_test.go), on Debian's kernel.
"$go" test -count=1 -run '^TestUML' ./hack/
"$go" test -c -o "$work/e2e.test" ./internal/e2e

summary=()
failed=0
for l in "${lines[@]}"; do
  kargs=()
  [ "${kernel_of[$l]}" = built ] && kargs=(--kernel "$built")
  echo "test-kernels: line $l: ${run_of[$l]}"
  start=$(date +%s)
  rc=0
  bash hack/uml/run.sh "${kargs[@]}" --timeout "$line_timeout" -e WEFT_BIN_DIR="$bin" -e WEFT_TEST_TIME_FACTOR="$factor" \
    -e WEFT_FLANNELD="$flanneld" -e "${env_of[$l]}" -- \
    "$work/e2e.test" -test.v -test.count=1 -test.timeout "$((line_timeout - 60))s" -test.run "${run_of[$l]}" |
    tee "$work/$l.log" || rc=$?
  took=$(($(date +%s) - start))
  kver="$(sed -n 's/^uml: kernel \([^,]*\),.*/\1/p' "$work/$l.log" | head -1)"
  pass=$(grep -cE '^ *--- PASS' "$work/$l.log" || true)
  fail=$(grep -cE '^ *--- FAIL' "$work/$l.log" || true)
  skip=$(grep -cE '^ *--- SKIP' "$work/$l.log" || true)
  verdict=ok
  if [ "$rc" -ne 0 ] || [ "$fail" -gt 0 ]; then
    verdict="FAILED (exit $rc)"
  elif [ "$skip" -gt 0 ]; then
    verdict="FAILED: $skip selected tests skipped: $(grep -E '^ *--- SKIP' "$work/$l.log" | awk '{print $3}' | tr '\n' ' ')"
  elif [ "$pass" -eq 0 ]; then
    verdict="FAILED: no test ran"
  fi
  [ "$verdict" = ok ] || failed=1
  summary+=("test-kernels: line $l on kernel ${kver:-?}: $pass tests passed, $fail failed, $skip skipped in $took s: $verdict")
done
printf '%s\n' "${summary[@]}"
exit "$failed"
