#!/usr/bin/env bash
# Runs one command inside User-Mode Linux: a Linux kernel that is an
# ordinary process of this machine, booted with this machine's own file
# system as its root (hostfs), so the command sees the same files, binaries
# and repository as here but runs on that kernel: its network namespaces,
# devices, routes and netfilter are the UML kernel's, not this machine's.
# The kernel tier (make test-kernels, hack/uml/test-kernels.sh) runs weft's
# end-to-end tests this way on kernels with modules this machine's lacks.
#
#   hack/uml/run.sh [options] [--] COMMAND [ARG...]
#
#   -k, --kernel FILE   the UML kernel: Debian's /usr/bin/linux.uml (package
#                       user-mode-linux, 6.1, with its modules) by default,
#                       or one built by hack/uml-kernel.sh (everything built
#                       in, WireGuard too)
#   -m, --mem SIZE      the UML machine's memory (default 3G)
#   -t, --timeout SECS  kill the UML machine after SECS seconds (default
#                       3600) and fail with 124
#   -e NAME=VALUE       set a variable in the command's environment
#                       (repeatable); the command gets PATH, HOME, TERM and
#                       these, nothing else of this shell's environment
#   -M, --modules LIST  modules to load before the command (a kernel with
#                       modules), besides the default list (tun veth bridge
#                       br_netfilter vxlan ipip dummy nf_tables nft_compat);
#                       any other module is loaded on demand
#   -v, --verbose       print the kernel's console too (boot messages)
#
# The command runs as root of the UML kernel, in the directory this script
# was started in. Its standard output and error go to this script's
# standard output as they come; the script exits with the command's exit
# status (124 on the timeout, 125 when the UML machine stopped before the
# command finished: the kernel's last console lines are printed then).
#
# Inside, before the command: /proc, /sys, a tmpfs on /run (so `ip netns`
# keeps its files in the UML machine), /dev/fd, TMPDIR on a tmpfs, and the
# kernel's modprobe pointed at the kernel's modules (Debian's
# /usr/lib/uml/modules/<release>). When the kernel cannot make an nftables
# nat chain (Debian's UML kernel), iptables is legacy iptables: PATH starts
# with a directory (on /run) where iptables, ip6tables and their -save and
# -restore are the -legacy ones (flanneld, and the tests' own iptables
# calls), and FLANNELD_IPTABLES_MODE=legacy is set (weftd's
# --iptables-mode, whose auto would choose iptables-nft). The first line of
# output names the kernel.
#
# It leaves nothing behind: its working directory (the init script, the
# output, the exit status, the UML machine's umid directory) is removed on
# exit, and every process of the UML machine is killed. Files the command
# itself writes to the host's file system stay, as they would here.
#
# It needs no root, and no KVM. Everything runs 5-20 times slower inside
# than here: tests read WEFT_TEST_TIME_FACTOR (internal/testenv).
set -euo pipefail

die() { echo "uml: $*" >&2; exit 2; }

kernel=/usr/bin/linux.uml
mem=3G
timeout=3600
verbose=no
modules="tun veth bridge br_netfilter vxlan ipip dummy nf_tables nft_compat"
envs=()
while [ $# -gt 0 ]; do
  case "$1" in
    -k | --kernel) kernel=${2:?}; shift 2 ;;
    -m | --mem) mem=${2:?}; shift 2 ;;
    -t | --timeout) timeout=${2:?}; shift 2 ;;
    -e) [[ ${2:-} == [A-Za-z_]*=* ]] || die "-e wants NAME=VALUE, not '${2:-}'"; envs+=("$2"); shift 2 ;;
    -M | --modules) modules="$modules ${2:?}"; shift 2 ;;
    -v | --verbose) verbose=yes; shift ;;
    --) shift; break ;;
    -*) die "unknown option $1 (see the comment at the top of $0)" ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || die "no command given: hack/uml/run.sh [options] [--] COMMAND [ARG...]"
[[ $timeout =~ ^[0-9]+$ ]] || die "--timeout wants seconds, not '$timeout'"

if [ ! -x "$kernel" ]; then
  if [ "$kernel" = /usr/bin/linux.uml ]; then
    die "Debian's UML kernel $kernel is missing: apt-get install -y --no-install-recommends user-mode-linux kmod"
  fi
  die "no UML kernel at $kernel (hack/uml-kernel.sh builds one)"
fi
kernel="$(readlink -f "$kernel")"
# Debian's kernel has its modules under /usr/lib/uml/modules/<release>; a
# kernel built by hack/uml-kernel.sh has none and a "release" file beside it.
release="" modular=no
if [ -f "$(dirname "$kernel")/release" ]; then
  release="$(cat "$(dirname "$kernel")/release")"
else
  modular=yes
  for d in /usr/lib/uml/modules/*/; do
    [ -d "$d" ] && release="$(basename "$d")"
  done
  [ -n "$release" ] || die "no modules of $kernel in /usr/lib/uml/modules: apt-get install -y --no-install-recommends user-mode-linux"
  command -v modprobe >/dev/null || die "modprobe is missing (Debian's UML kernel loads its modules with it): apt-get install -y --no-install-recommends kmod"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/weft-uml.XXXXXX")"
uml_pid=""
cleanup() {
  if [ -n "$uml_pid" ]; then
    kill -KILL -- "-$uml_pid" 2>/dev/null || true
    wait "$uml_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The command, its directory and its environment, as shell words for init.
{
  printf 'cd %q\n' "$PWD"
  printf 'export PATH=%q HOME=%q TERM=%q\n' "$PATH" "${HOME:-/root}" "${TERM:-dumb}"
  for e in "${envs[@]}"; do printf 'export %s=%q\n' "${e%%=*}" "${e#*=}"; done
  printf 'set --'
  printf ' %q' "$@"
  printf '\n'
} >"$work/command"

if [ "$modular" = yes ]; then
  mkdir -p "$work/modroot/lib/modules"
  ln -s "/usr/lib/uml/modules/$release" "$work/modroot/lib/modules/$release"
  printf '#!/bin/sh\nexec /sbin/modprobe -d %q "$@"\n' "$work/modroot" >"$work/modprobe"
  chmod +x "$work/modprobe"
fi

cat >"$work/init" <<EOF
#!/bin/bash
# The UML machine's init (hack/uml/run.sh): set up, run the command, power off.
work=$(printf %q "$work")
modules=$(printf %q "$modules")
EOF
cat >>"$work/init" <<'EOF'
exec 3>>"$work/output" 4>"$work/exit"
exec >&3 2>&3 </dev/null
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/tmp && chmod 1777 /run/tmp
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
if [ -x "$work/modprobe" ]; then
  echo "$work/modprobe" >/proc/sys/kernel/modprobe
  for m in $modules; do "$work/modprobe" "$m" || echo "uml: module $m did not load"; done
fi
legacy=""
if command -v nft >/dev/null && ! unshare -n nft -f - >/dev/null 2>&1 <<'NFT'
add table ip weftprobe
add chain ip weftprobe c { type nat hook postrouting priority 100; }
NFT
then
  mkdir -p /run/uml-legacy
  for b in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
    ln -s "/usr/sbin/${b%%-*}-legacy${b#"${b%%-*}"}" "/run/uml-legacy/$b"
  done
  legacy=" (no nftables nat chain type: iptables is iptables-legacy, and weftd's --iptables-mode legacy)"
fi
echo "uml: kernel $(uname -r), $(nproc) CPU, $(awk '/MemTotal/ {print int($2/1024) " MiB"}' /proc/meminfo)$legacy"
(
  . "$work/command"
  export TMPDIR=/run/tmp
  if [ -n "$legacy" ]; then
    export PATH="/run/uml-legacy:$PATH" FLANNELD_IPTABLES_MODE=legacy
  fi
  exec "$@"
)
echo $? >&4
exec 3>&- 4>&-
poweroff -ff >/dev/null 2>&1 || busybox poweroff -f >/dev/null 2>&1 || echo o >/proc/sysrq-trigger
sleep 60
EOF
chmod +x "$work/init"
: >"$work/output"

start=$(date +%s)
# The UML machine in a process group of its own (its helper processes
# too), so that every process of it can be killed at once.
setsid "$kernel" mem="$mem" rootfstype=hostfs rootflags=/ rw init="$work/init" quiet \
  con=null con0=null,fd:2 uml_dir="$work" umid=uml </dev/null >/dev/null 2>"$work/console" &
uml_pid=$!
# The command's output as it comes; tail ends when the UML machine does.
tail -n +1 -f --pid="$uml_pid" "$work/output" &
tail_pid=$!
timed_out=no
while kill -0 "$uml_pid" 2>/dev/null; do
  if [ $(($(date +%s) - start)) -ge "$timeout" ]; then
    timed_out=yes
    kill -KILL -- "-$uml_pid" 2>/dev/null || true
    break
  fi
  sleep 1
done
wait "$uml_pid" 2>/dev/null || true
wait "$tail_pid" 2>/dev/null || true
uml_pid=""
[ "$verbose" = yes ] && cat "$work/console" >&2
if [ "$timed_out" = yes ]; then
  echo "uml: $* did not finish within $timeout s; the UML machine was killed" >&2
  exit 124
fi
code="$(cat "$work/exit" 2>/dev/null || true)"
if ! [[ $code =~ ^[0-9]+$ ]]; then
  echo "uml: the UML machine stopped before $1 finished; the kernel's last console lines:" >&2
  tail -n 20 "$work/console" >&2
  exit 125
fi
exit "$code"
