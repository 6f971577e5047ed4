#!/usr/bin/env bash
# Builds the User-Mode Linux kernel of the kernel tier (make test-kernels,
# hack/uml/README.md): Linux 6.1 from Debian's linux-source-6.1, ARCH=um,
# with everything the end-to-end suite drives built in (no modules): WireGuard,
# ipip, vxlan, veth, bridge, tun, IPv6, nf_tables with the nat chain type,
# masquerade, ct and queue, iptables (filter, nat, mangle, raw) and its xt
# matches, ipset, conntrack with labels, bridge netfilter, and hostfs and
# devtmpfs to boot on the host's own file system. Debian's prebuilt UML
# kernel (the user-mode-linux package) has no WireGuard and no nft nat chain
# type; this one has both.
#
# Into ${WEFT_UML_KERNEL_DIR:-$HOME/.cache/weft/uml-<hash>} it writes
#
#   linux     the kernel, an ordinary executable (stripped)
#   config    its .config
#   release   its release string (uname -r inside it)
#
# and prints that directory on stdout (everything else goes to stderr).
#
# Built once: <hash> is the stamp (the hash of this script's lines other
# than comments, which hold the option list and the build steps, of the
# source package's version and of gcc's), and a second run with the same
# stamp does nothing (hack/lib/cache.sh; a lock keeps two runs from building
# together). The compiler runs at nice 19, so that it takes only what
# nothing else wants: a cold build is about 18 CPU-minutes, 13 minutes on
# 2 cores beside light load and 22 beside other builds. Installs
# linux-source-6.1 and the build tools (flex, bison, bc, make, gcc) when
# missing (root).
#
# Environment: WEFT_UML_KERNEL_DIR (the output directory), JOBS (make -j,
# default the number of CPUs).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
src_pkg=linux-source-6.1
tarball=/usr/src/$src_pkg.tar.xz

die() { echo "uml-kernel: $*" >&2; exit 1; }

# shellcheck source=lib/apt.sh
source "$root/hack/lib/apt.sh"
apt_ensure uml-kernel make=make gcc=gcc flex=flex bison=bison bc=bc xz=xz-utils
if [ ! -e "$tarball" ]; then
  [ "$(id -u)" -eq 0 ] || die "$tarball is missing; run as root, or: apt-get install -y --no-install-recommends $src_pkg"
  echo "uml-kernel: installing $src_pkg" >&2
  apt_install "$src_pkg"
fi

# The options, beyond ARCH=um's defconfig. Each must be =y after olddefconfig
# (checked below: a name Kconfig does not know, or whose dependencies are
# not met, stops the build with its name).
enable=(
  # what the suite's nodes, pods and data paths are made of
  NET INET IPV6 UNIX PACKET NAMESPACES NET_NS UTS_NS IPC_NS IP_ADVANCED_ROUTER IP_MULTIPLE_TABLES IPV6_MULTIPLE_TABLES
  VETH BRIDGE TUN DUMMY VXLAN NET_IPIP WIREGUARD INET_DIAG INET_UDP_DIAG UNIX_DIAG PACKET_DIAG NETLINK_DIAG
  # the netlink families a netlink handle opens by default (vishvananda/netlink: route, xfrm, netfilter)
  XFRM_USER
  # nf_tables: weft's and flannel's nftables rules
  NETFILTER NETFILTER_ADVANCED NETFILTER_NETLINK_QUEUE NF_CONNTRACK NF_CONNTRACK_MARK NF_CONNTRACK_LABELS NF_CT_NETLINK
  NF_NAT NF_TABLES NF_TABLES_INET NF_TABLES_IPV4 NF_TABLES_IPV6 NF_TABLES_NETDEV NFT_CT NFT_NAT NFT_MASQ NFT_REDIR NFT_COMPAT
  NFT_QUEUE NFT_LOG NFT_LIMIT NFT_REJECT NFT_FIB_INET NFT_FIB_IPV4 NFT_FIB_IPV6 NFT_NUMGEN NFT_HASH
  # NetworkPolicy's table (internal/netpol): named counters (nft_objref); SCTP for its SCTP probes
  NFT_OBJREF IP_SCTP
  # iptables and ip6tables (weft's and flannel's iptables rules, legacy and nft)
  NETFILTER_XTABLES NETFILTER_XT_MARK NETFILTER_XT_CONNMARK NETFILTER_XT_NAT NETFILTER_XT_TARGET_MASQUERADE
  NETFILTER_XT_MATCH_MARK NETFILTER_XT_TARGET_MARK NETFILTER_XT_MATCH_CONNMARK NETFILTER_XT_TARGET_CONNMARK
  NETFILTER_XT_MATCH_OWNER NF_CONNTRACK_EVENTS NF_CONNTRACK_PROCFS
  NETFILTER_XT_TARGET_NFQUEUE NETFILTER_XT_TARGET_LOG NETFILTER_XT_TARGET_REDIRECT NETFILTER_XT_TARGET_CT
  NETFILTER_XT_TARGET_NOTRACK NETFILTER_XT_MATCH_COMMENT NETFILTER_XT_MATCH_CONNTRACK NETFILTER_XT_MATCH_STATE
  NETFILTER_XT_MATCH_MULTIPORT NETFILTER_XT_MATCH_ADDRTYPE NETFILTER_XT_MATCH_PHYSDEV NETFILTER_XT_MATCH_LIMIT
  NETFILTER_XT_MATCH_IPRANGE NETFILTER_XT_MATCH_STATISTIC NETFILTER_XT_MATCH_PKTTYPE NETFILTER_XT_SET
  IP_NF_IPTABLES IP_NF_FILTER IP_NF_NAT IP_NF_TARGET_MASQUERADE IP_NF_TARGET_REJECT IP_NF_MANGLE IP_NF_RAW
  IP6_NF_IPTABLES IP6_NF_FILTER IP6_NF_NAT IP6_NF_TARGET_MASQUERADE IP6_NF_TARGET_REJECT IP6_NF_MANGLE IP6_NF_RAW
  IP_SET IP_SET_HASH_IP IP_SET_HASH_NET IP_SET_HASH_IPPORT IP_SET_HASH_NETPORT IP_SET_BITMAP_PORT IP_SET_LIST_SET
  BRIDGE_NETFILTER
  # booting on the host's file system
  HOSTFS DEVTMPFS DEVTMPFS_MOUNT TMPFS PROC_FS SYSFS
  DEBUG_INFO_NONE
)
# Not needed by the suite, and slow to build or a source of modules.
disable=(
  MODULES DEBUG_INFO DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT EXT4_FS REISERFS_FS QUOTA SOUND UML_SOUND PPP SLIP
  UML_NET BLK_DEV_UBD BLK_DEV_LOOP BLK_DEV_NBD ISO9660_FS AUTOFS_FS BINFMT_MISC IOSCHED_BFQ
)

src_version="$(dpkg-query -W -f '${Version}' "$src_pkg" 2>/dev/null || sha256sum <"$tarball" | cut -c1-16)"
stamp="$({
  grep -v '^[[:space:]]*#' "$root/hack/uml-kernel.sh"
  echo "$src_pkg $src_version"
  gcc --version | head -1
} | sha256sum | cut -d' ' -f1)"
dir="${WEFT_UML_KERNEL_DIR:-$HOME/.cache/weft/uml-${stamp:0:12}}"

# shellcheck source=lib/cache.sh
source "$root/hack/lib/cache.sh"
cache_begin "$dir" "$stamp" linux config release

start=$(date +%s)
echo "uml-kernel: building the UML kernel from $src_pkg $src_version into $dir (about 18 CPU-minutes: 13-22 minutes on 2 cores)" >&2
nice -n 19 tar -xJf "$tarball" -C "$tmp"
src="$tmp/$src_pkg"
[ -d "$src" ] || die "$tarball did not unpack into $src_pkg/"
mk=(nice -n 19 make -C "$src" ARCH=um -s)
"${mk[@]}" defconfig >&2
args=()
for o in "${enable[@]}"; do args+=(--enable "$o"); done
for o in "${disable[@]}"; do args+=(--disable "$o"); done
"$src/scripts/config" --file "$src/.config" "${args[@]}"
"${mk[@]}" olddefconfig >&2
missing=()
for o in "${enable[@]}"; do
  grep -qx "CONFIG_$o=y" "$src/.config" || missing+=("$o")
done
[ ${#missing[@]} -eq 0 ] || die "not built in after olddefconfig (unknown, or a dependency missing): ${missing[*]}"
grep -q '^CONFIG_MODULES=y' "$src/.config" && die "CONFIG_MODULES is still on"
"${mk[@]}" -j"${JOBS:-$(nproc)}" linux >&2
"${mk[@]}" kernelrelease >"$tmp/release"
strip -o "$tmp/linux" "$src/linux"
cp "$src/.config" "$tmp/config"
rm -rf "$src"
echo "uml-kernel: built $(cat "$tmp/release") in $(($(date +%s) - start)) s" >&2
cache_commit "$dir" "$stamp" linux config release
