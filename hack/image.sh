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
step "building weftd, the weft CLI, the CNI plugin and bridge, host-local, portmap, loopback (static)"
stage=$work/bin
(cd "$repo" && CGO_ENABLED=0 "$go" build -trimpath -ldflags '-s -w' -o "$stage/" \
  ./cmd/weftd ./cmd/weft ./cmd/weft-cni "${cni_tools[@]}")
version=$("$stage/weftd" --version | awk '{print $2}')
[[ -n $version ]] || die "cannot read weftd's version"
tag=${WEFT_IMAGE_TAG:-ghcr.io/weft-net/weft:${version//+/-}}

# --- 2. the root filesystem --------------------------------------------------
step "assembling the root filesystem"
# shellcheck source=lib/rootfs.sh
source "$repo/hack/lib/rootfs.sh"
rootfs_base
mkdir -p "$rootfs/opt/weft/cni"
rootfs_netfilter
# busybox-static: `cp` for the init containers, a shell for debugging.
rootfs_busybox sh cp mv rm ln mkdir cat ls chmod echo sleep
# flannel v0.28.9's kube-flannel.yml installs the conflist with
# `/opt/bin/install-conf SRC DST`.
rootfs_install_conf

# weft: the daemon (also under flannel's name), the operator's CLI (weft
# status), the plugin at flannel's /flannel, and the plugins in /opt/weft/cni.
install -m 0755 "$stage/weftd" "$rootfs/usr/local/bin/weftd"
install -m 0755 "$stage/weft" "$rootfs/usr/local/bin/weft"
ln -s /usr/local/bin/weftd "$rootfs/opt/bin/flanneld"
install -m 0755 "$stage/weft-cni" "$rootfs/flannel"
for p in bridge host-local portmap loopback; do install -m 0755 "$stage/$p" "$rootfs/opt/weft/cni/$p"; done
ln -s /flannel "$rootfs/opt/weft/cni/flannel"
ln -s /flannel "$rootfs/opt/weft/cni/weft"

# Every program starts in the image's root alone, and every library and
# xtables module resolves there (dlopen happens only when a rule uses one).
step "checking the root filesystem in a chroot"
rootfs_check "/usr/local/bin/weftd --version" "/opt/bin/flanneld --version" "/usr/local/bin/weft version" "/usr/sbin/iptables -V" \
  "/usr/sbin/iptables-legacy -V" "/usr/sbin/ip6tables -V" "/usr/sbin/ip6tables-legacy -V" \
  "/usr/sbin/nft --version" "/usr/bin/cp --help"

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
