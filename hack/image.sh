#!/usr/bin/env bash
# Builds weft's container image without a registry or a base image and writes
# it as an OCI archive (bin/weft-image.oci.tar); `make image` runs it.
#
#   1. weftd, weft's CNI plugin and the reference CNI plugins are built
#      statically (CGO_ENABLED=0, stripped) for the image; the binaries of
#      `make build` in bin/ are not touched.
#   2. A root filesystem is assembled from this (Debian) host: iptables
#      (xtables-nft-multi, xtables-legacy-multi, the xtables modules) and
#      nftables with exactly the shared libraries ldd names, busybox-static
#      for `cp` and `sh`, the Go binaries. As root it is checked in a chroot:
#      every program starts and every library and module resolves.
#   3. deploy/Containerfile (FROM scratch, COPY rootfs/ /) is built by buildah
#      with the vfs driver in a storage of its own under a temporary directory
#      (removed at exit; only containers/image's small blob-info cache in
#      /var/lib/containers/cache is shared), and pushed to the archive. The
#      image's size is printed. --timestamp 0 and -trimpath make the image
#      reproducible: the same tree gives the same manifest digest.
#
# Needs root, and: apt-get install -y --no-install-recommends buildah busybox-static iptables nftables
# Environment: WEFT_IMAGE_OUT (the archive, default bin/weft-image.oci.tar),
# WEFT_IMAGE_TAG (default ghcr.io/weft-net/weft:<weftd's version>), GO (go).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${WEFT_IMAGE_OUT:-$repo/bin/weft-image.oci.tar}
go=${GO:-go}
plugins=github.com/containernetworking/plugins/plugins
cni_tools=("$plugins/main/bridge" "$plugins/ipam/host-local" "$plugins/meta/portmap" "$plugins/main/loopback")

die() { echo "image: $*" >&2; exit 1; }
step() { printf '[%3ds] %s\n' "$SECONDS" "$*"; }

[[ $(id -u) -eq 0 ]] || die "needs root (buildah and the chroot check)"
command -v buildah >/dev/null || die "buildah is not installed: apt-get install -y --no-install-recommends buildah"
busybox=$(command -v busybox) || die "busybox is not installed: apt-get install -y busybox-static"
if ldd "$busybox" >/dev/null 2>&1; then
  die "$busybox is dynamically linked: install busybox-static"
fi
for b in xtables-nft-multi xtables-legacy-multi nft; do
  [[ -x /usr/sbin/$b ]] || die "/usr/sbin/$b is missing: apt-get install -y iptables nftables"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/weft-image.XXXXXX")
bah=(buildah --root "$work/storage" --runroot "$work/runroot" --storage-driver vfs)
cleanup() {
  "${bah[@]}" rmi --all --force >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
ctx=$work/ctx
rootfs=$ctx/rootfs

# --- 1. static Go binaries -------------------------------------------------
step "building weftd, the CNI plugin and bridge, host-local, portmap, loopback (static)"
stage=$work/bin
(cd "$repo" && CGO_ENABLED=0 "$go" build -trimpath -ldflags '-s -w' -o "$stage/" \
  ./cmd/weftd ./cmd/weft-cni "${cni_tools[@]}")
version=$("$stage/weftd" --version | awk '{print $2}')
[[ -n $version ]] || die "cannot read weftd's version"
tag=${WEFT_IMAGE_TAG:-ghcr.io/weft-net/weft:${version//+/-}}

# --- 2. the root filesystem --------------------------------------------------
step "assembling the root filesystem"
# Debian's merged /usr: /bin, /sbin, /lib and /lib64 are links into /usr.
mkdir -p "$rootfs"/usr/{bin,sbin,lib,lib64} "$rootfs"/{etc,run,opt/bin,opt/weft/cni,usr/local/bin}
for d in bin sbin lib lib64; do ln -s "usr/$d" "$rootfs/$d"; done
mkdir -m 1777 "$rootfs/tmp"
mkdir -p "$rootfs/var" && ln -s ../run "$rootfs/var/run"
# Mount points of kube-weft.yml (a runtime creates them too).
mkdir -p "$rootfs"/{run/flannel,etc/kube-flannel,etc/cni/net.d,opt/cni/bin}

# put PATH copies the file PATH resolves to into the same place in the root
# filesystem and, when PATH itself is a link (libc.so.6, ld-linux-x86-64.so.2
# in /lib64), recreates that name as a link to it.
put() {
  local path=$1 real dir name
  real=$(readlink -f "$path")
  [[ -f $real ]] || die "$path does not exist"
  if [[ ! -e $rootfs$real ]]; then
    mkdir -p "$rootfs$(dirname "$real")"
    cp -p "$real" "$rootfs$real"
  fi
  dir=$(readlink -f "$(dirname "$path")")
  name=$dir/$(basename "$path")
  if [[ $name != "$real" && ! -e $rootfs$name && ! -L $rootfs$name ]]; then
    mkdir -p "$rootfs$dir"
    ln -s "$(realpath --relative-to="$dir" "$real")" "$rootfs$name"
  fi
}

# put_with_libs FILE... copies the FILEs and every shared library ldd says
# they need (ldd runs once: the xtables modules alone are over a hundred).
put_with_libs() {
  local f libs
  for f in "$@"; do put "$f"; done
  libs=$(ldd "$@") || die "ldd failed on one of: $*"
  if grep -q 'not found' <<<"$libs"; then
    die "a library this host does not have is needed: $(grep 'not found' <<<"$libs" | sort -u)"
  fi
  while read -r lib; do
    put "$lib"
  done < <(awk '$2 == "=>" && $3 ~ /^\// {print $3; next} $1 ~ /^\// && $1 !~ /:$/ {print $1}' <<<"$libs" | sort -u)
}

# The xtables match and target modules (MASQUERADE, comment, mark, ...) are
# loaded with dlopen from the directory next to libxtables.
libdir=$(dirname "$(readlink -f "$(ldd /usr/sbin/xtables-nft-multi | awk '$1 == "libxtables.so.12" {print $3}')")")
[[ -d $libdir/xtables ]] || die "no xtables modules in $libdir/xtables"
modules=("$libdir"/xtables/*.so)
mkdir -p "$rootfs$libdir"
cp -a "$libdir/xtables" "$rootfs$libdir/"
put_with_libs /usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi /usr/sbin/nft "${modules[@]}"
# iptables' names, as Debian's package and alternatives (nft backend by
# default) make them.
for fam in iptables ip6tables; do
  for sfx in "" -save -restore; do
    ln -s xtables-nft-multi "$rootfs/usr/sbin/$fam-nft$sfx"
    ln -s xtables-legacy-multi "$rootfs/usr/sbin/$fam-legacy$sfx"
    ln -s "$fam-nft$sfx" "$rootfs/usr/sbin/$fam$sfx"
  done
done
# Files iptables and nft may read: protocol and service names, the lock
# iptables takes (/run/xtables.lock is mounted from the host in a cluster).
for f in /etc/protocols /etc/services /etc/ethertypes; do
  if [[ -f $f ]]; then cp -p "$f" "$rootfs$f"; fi
done
printf 'hosts: files dns\nprotocols: files\nservices: files\n' >"$rootfs/etc/nsswitch.conf"
printf 'root:x:0:0:root:/:/bin/sh\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\n' >"$rootfs/etc/group"

# busybox-static: `cp` for the init containers, a shell for debugging.
cp -p "$busybox" "$rootfs/usr/bin/busybox"
for applet in sh cp mv rm ln mkdir cat ls chmod echo sleep; do
  ln -s busybox "$rootfs/usr/bin/$applet"
done
# flannel v0.28.9's Helm chart installs the conflist with
# `/opt/bin/install-conf SRC DST`; this one copies atomically.
cat >"$rootfs/opt/bin/install-conf" <<'EOF'
#!/bin/sh
# install-conf SRC DST: copies the CNI conflist SRC to DST through a
# temporary file in DST's directory and a rename, so that the container
# runtime never reads half a file.
set -eu
if [ $# -ne 2 ]; then echo "usage: install-conf SRC DST" >&2; exit 2; fi
tmp="$2.tmp.$$"
cp -f "$1" "$tmp"
mv -f "$tmp" "$2"
EOF
chmod 0755 "$rootfs/opt/bin/install-conf"

# weft: the daemon (also under flannel's name), the plugin at flannel's
# /flannel, and the plugins in /opt/weft/cni.
install -m 0755 "$stage/weftd" "$rootfs/usr/local/bin/weftd"
ln -s /usr/local/bin/weftd "$rootfs/opt/bin/flanneld"
install -m 0755 "$stage/weft-cni" "$rootfs/flannel"
for p in bridge host-local portmap loopback; do install -m 0755 "$stage/$p" "$rootfs/opt/weft/cni/$p"; done
ln -s /flannel "$rootfs/opt/weft/cni/flannel"
ln -s /flannel "$rootfs/opt/weft/cni/weft"

# Every program starts in the image's root alone, and every library and
# xtables module resolves there (dlopen happens only when a rule uses one).
step "checking the root filesystem in a chroot"
for cmd in "/usr/local/bin/weftd --version" "/opt/bin/flanneld --version" "/usr/sbin/iptables -V" \
  "/usr/sbin/iptables-legacy -V" "/usr/sbin/ip6tables -V" "/usr/sbin/ip6tables-legacy -V" \
  "/usr/sbin/nft --version" "/usr/bin/cp --help"; do
  # shellcheck disable=SC2086 # the command is split on purpose
  chroot "$rootfs" $cmd >/dev/null 2>&1 || die "in the image, '$cmd' fails: $(chroot "$rootfs" $cmd 2>&1 | head -3)"
done
missing=""
for f in /usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi /usr/sbin/nft "${modules[@]}"; do
  list=$(chroot "$rootfs" /lib64/ld-linux-x86-64.so.2 --list "$f" 2>&1) || missing+="$f: $list"$'\n'
  if grep -q 'not found' <<<"$list"; then missing+="$f: $(grep 'not found' <<<"$list")"$'\n'; fi
done
[[ -z $missing ]] || die "libraries missing in the image: $missing"

# --- 3. the image ------------------------------------------------------------
step "building $tag with buildah (deploy/Containerfile)"
cp "$repo/deploy/Containerfile" "$ctx/Containerfile"
"${bah[@]}" build --quiet --timestamp 0 --build-arg "VERSION=$version" -f "$ctx/Containerfile" -t "$tag" "$ctx" >/dev/null
mkdir -p "$(dirname "$out")"
rm -f "$out.tmp"
"${bah[@]}" push --quiet "$tag" "oci-archive:$out.tmp:$tag"
mv -f "$out.tmp" "$out"

mb() { awk -v b="$1" 'BEGIN {printf "%.1f MB", b / 1e6}'; }
step "wrote $out"
echo "image $tag: $(mb "$(stat -c %s "$out")") as an OCI archive (compressed), $(mb "$(du -sb "$rootfs" | cut -f1)") unpacked"
