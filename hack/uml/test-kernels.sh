#!/usr/bin/env bash
# The kernel tier (make test-kernels): weft's end-to-end kernel cases, run
# inside User-Mode Linux (hack/uml/run.sh) on kernels that have the modules
# this machine's kernel lacks, as a second kernel line beside the host's.
# Each line runs its package's test binary once (internal/e2e's, or
# internal/netpol's), with -test.run selecting its cases; the first line of
# its output names the kernel ("uml: kernel 6.1.x").
#
#   debian   Debian's UML kernel (package user-mode-linux, 6.1, modules
#            loaded on demand; no WireGuard, no nftables nat chain type, so
#            iptables is legacy): ipip's kernel path (FLANNELD_IPIP_PATH=kernel)
#            with and without DirectRouting, kill -9 and restarts under a
#            100 Hz ping, flannel.ipip and its route deleted, beside
#            flanneld v0.28.9 in both orders; vxlan and host-gw's ping
#            matrix, restarts and repairs; masquerade with iptables
#   wg       the kernel hack/uml-kernel.sh builds (6.1, everything built
#            in, WireGuard too): WireGuard's kernel path
#            (FLANNELD_WIREGUARD_PATH=kernel): kill -9 under a 100 Hz ping,
#            peers removed and added by hand, a key changed, PSK, Modes
#            separate and auto dual-stack, beside flanneld v0.28.9's
#            wireguard backend in both orders; masquerade with nftables
#   netpol   the built kernel again: internal/netpol's privileged tests
#            (its own test binary): NetworkPolicy's table written by the
#            Syncer and real TCP, UDP, SCTP and ICMP packets between pod
#            namespaces of two node namespaces, bridged (br_netfilter) and
#            routed, held to Evaluate; conntrack cuts; repairs. It needs
#            nf_tables' inet family, ct, objref (named counters), conntrack
#            netlink and SCTP, which Debian's UML kernel lacks (it has no
#            ip, ip6 or inet nf_tables family at all); neither weftd nor
#            flanneld
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
lines=(debian wg netpol)
declare -A kernel_of=([debian]=debian [wg]=built [netpol]=built)
declare -A env_of=([debian]=FLANNELD_IPIP_PATH=kernel [wg]=FLANNELD_WIREGUARD_PATH=kernel [netpol]=WEFT_TEST_TIERS=privileged)
# Each line's test binary (go test -c of internal/<package>), and the
# lines whose time limit is below WEFT_UML_TIMEOUT (netpol takes about 4
# minutes; once, its UML kernel spun for 18 minutes and never finished).
declare -A pkg_of=([debian]=e2e [wg]=e2e [netpol]=netpol)
declare -A timeout_of=([netpol]=900)
declare -A run_of=(
  [debian]='^(TestIPIPKernelPath|TestIPIPKernelRepair|TestIPIPBesideFlannel|TestPingMatrix|TestKillRestartLosesNoPing|TestRepairRestoresTraffic|TestMasquerade)$/^(plain|directrouting|weft-first|flannel-first|vxlan|vxlan-directrouting|host-gw|iptables)$'
  [netpol]='^(TestSyncerConformance|TestDatapath)$'
  [wg]='^(TestWireGuardKernelPath|TestWireGuardPeersDesiredState|TestWireGuardKeyChange|TestWireGuardPSK|TestWireGuardDualStack|TestWireGuardBesideFlannel|TestPingMatrix|TestMasquerade)$/^(separate|auto|weft-first|flannel-first|wireguard|nftables)$'
)
if [ $# -gt 0 ]; then
  for l in "$@"; do [ -n "${kernel_of[$l]:-}" ] || die "no line '$l' (lines: ${lines[*]})"; done
  lines=("$@")
fi

e2e=no
for l in "${lines[@]}"; do [ "${pkg_of[$l]}" = e2e ] && e2e=yes; done
[ "$e2e" = no ] || [ -x "$bin/weftd" ] || die "no weftd in $bin: run make build first (or set WEFT_BIN_DIR)"
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
if [ -z "$flanneld" ] && [ "$e2e" = yes ]; then
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
[ -z "$flanneld" ] || echo "test-kernels: flanneld $("$flanneld" --version 2>&1) ($flanneld)"

# The runner itself (hack/uml_test.go), on Debian's kernel.
"$go" test -count=1 -run '^TestUML' ./hack/
for pkg in $(for l in "${lines[@]}"; do echo "${pkg_of[$l]}"; done | sort -u); do
  "$go" test -c -o "$work/$pkg.test" "./internal/$pkg"
done

summary=()
failed=0
for l in "${lines[@]}"; do
  kargs=()
  [ "${kernel_of[$l]}" = built ] && kargs=(--kernel "$built")
  echo "test-kernels: line $l: ${run_of[$l]}"
  start=$(date +%s)
  rc=0
  lt="${timeout_of[$l]:-$line_timeout}"
  [ "$lt" -le "$line_timeout" ] || lt="$line_timeout"
  bash hack/uml/run.sh "${kargs[@]}" --timeout "$lt" -e WEFT_BIN_DIR="$bin" -e WEFT_TEST_TIME_FACTOR="$factor" \
    -e WEFT_FLANNELD="$flanneld" -e "${env_of[$l]}" -- \
    "$work/${pkg_of[$l]}.test" -test.v -test.count=1 -test.timeout "$((lt - 60))s" -test.run "${run_of[$l]}" |
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
