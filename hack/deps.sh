#!/usr/bin/env bash
# Installs, from Debian's apt, the tools the tests drive, when they are missing.
# Idempotent and quick when everything is present; `make test` runs it first.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# command -> Debian package
declare -A pkgs=(
  [ip]=iproute2 [ping]=iputils-ping [iptables]=iptables [nft]=nftables
  [etcd]=etcd-server [pkill]=procps [make]=make [iperf3]=iperf3
  [buildah]=buildah [runc]=runc [busybox]=busybox-static [wg]=wireguard-tools [tcpdump]=tcpdump
  [gcc]=gcc
)
missing=()
for cmd in "${!pkgs[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkgs[$cmd]}")
done
[ -e /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
# flanneld (hack/flannel-image.sh, the upgrade test) is built with cgo and linked statically.
[ -e "/usr/lib/$(uname -m)-linux-gnu/libc.a" ] || missing+=(libc6-dev)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing ${missing[*]}; run as root (or install them) to run every test" >&2
  exit 0 # root-only tests skip with a message; plain tests still run
fi
echo "deps: installing ${missing[*]}"
# Debian's etcd-server package starts an etcd service on 2379 when systemd
# runs. The tests use their own processes on free ports and never need it;
# stop it only when this script installed it and it was not running before,
# so an operator's own etcd is never touched.
etcd_was_active=no
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
  etcd_was_active=yes
fi
apt-get update -qq
# No recommends: wireguard-tools and friends would otherwise pull in a kernel image.
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if [[ " ${missing[*]} " == *" etcd-server "* && $etcd_was_active == no ]] && command -v systemctl >/dev/null 2>&1; then
  systemctl stop etcd 2>/dev/null || true
fi
