#!/usr/bin/env bash
# Installs, from Debian's apt, the tools weft's lab and tests drive, when they
# are missing. Idempotent and quick when everything is present.
#
#   hack/deps.sh        everything the tests need (`make test` runs it first)
#   hack/deps.sh lab    what `make lab` needs: the lab's nodes run weftd
#                       (iptables, nft), `ip`, and docs/lab.md's examples
#                       (ping, wg)
#
# It waits for another apt or dpkg that holds the dpkg lock (APT_LOCK_TIMEOUT
# seconds, default 600: hack/lib/apt.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=lib/apt.sh
source "$root/hack/lib/apt.sh"

# command=Debian package
lab=(ip=iproute2 ping=iputils-ping iptables=iptables nft=nftables wg=wireguard-tools)
all=("${lab[@]}" etcd=etcd-server pkill=procps make=make iperf3=iperf3 buildah=buildah runc=runc
  busybox=busybox-static tcpdump=tcpdump gcc=gcc)

case "${1:-all}" in
  lab) apt_ensure deps "${lab[@]}"; exit ;;
  all) ;;
  *) echo "usage: hack/deps.sh [lab|all]" >&2; exit 2 ;;
esac

extra=()
[ -e /etc/ssl/certs/ca-certificates.crt ] || extra+=(ca-certificates)
# flanneld (hack/flannel-image.sh, the upgrade test) is built with cgo and linked statically.
[ -e "/usr/lib/$(uname -m)-linux-gnu/libc.a" ] || extra+=(libc6-dev)
if [ "$(id -u)" -ne 0 ]; then
  # Root-only tests skip with a message; plain tests still run.
  apt_ensure deps "${all[@]}" || true
  exit 0
fi
# Debian's etcd-server package starts an etcd service on 2379 when systemd
# runs. The tests use their own processes on free ports and never need it;
# stop it only when this script installed it and it was not running before,
# so an operator's own etcd is never touched.
etcd_was_active=no
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
  etcd_was_active=yes
fi
had_etcd=no
command -v etcd >/dev/null 2>&1 && had_etcd=yes
if [ ${#extra[@]} -gt 0 ]; then
  echo "deps: installing ${extra[*]}" >&2
  apt_install "${extra[@]}"
fi
apt_ensure deps "${all[@]}"
if [[ $had_etcd == no && $etcd_was_active == no ]] && command -v systemctl >/dev/null 2>&1; then
  systemctl stop etcd 2>/dev/null || true
fi
