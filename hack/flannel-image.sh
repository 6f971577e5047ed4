#!/usr/bin/env bash
# Builds flannel v0.28.9 the way kube-flannel.yml runs it, for the real-node
# lab's upgrade test (a cluster on flannel's own DaemonSet, then
# deploy/kube-weft.yml applied over it): into
# ${WEFT_FLANNEL_DIR:-$HOME/.cache/weft/flannel-v0.28.9} it writes
#
#   flannel.tar       weft.local/flannel:v0.28.9 as an OCI archive: flanneld at
#                     /opt/bin/flanneld, flannel's CNI plugin at /flannel,
#                     /opt/bin/install-conf, Debian's iptables and nft,
#                     busybox-static's cp and sh (hack/lib/rootfs.sh, as in
#                     weft's own image). One image serves kube-flannel.yml's
#                     three containers, flannel-cni-plugin's included.
#   kube-flannel.yml  flannel's release manifest, made from the module's
#                     Documentation/kustomization/kube-flannel as flannel's
#                     Makefile makes it (kubectl kustomize; kubectl from
#                     hack/kube-bins.sh), unchanged
#
# and prints that directory on stdout (everything else goes to stderr).
#
# What differs from flannel's release, and why (the module proxy serves only
# some of what flannel's build takes):
#   - flanneld is built from github.com/flannel-io/flannel v0.28.9 without its
#     tencentvpc backend: the proxy refuses that backend's SDK
#     (github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc, 403), so
#     its import in main.go and its two requirements are dropped from a copy
#     of the module. Every other backend is in; cgo is on and the binary is
#     static, as flannel's Makefile builds it (its udp backend needs cgo).
#   - The CNI plugin is github.com/containernetworking/plugins v0.9.1's
#     plugins/meta/flannel, the last release of the plugin there before it
#     moved to github.com/flannel-io/cni-plugin (which the proxy does not
#     serve): the same conflist, subnet.env and delegate files.
#
# Built once: a stamp (the hash of this script, hack/lib/rootfs.sh and the
# versions of Go, buildah, busybox, iptables and nft) next to the files says
# what they were built from, and a second run with the same stamp does
# nothing. A lock keeps two runs from building together. A cold build takes
# about 3 minutes. Needs root (buildah, the chroot check), gcc and libc6-dev
# (cgo), buildah, busybox-static, iptables and nftables.
#
# Environment: WEFT_FLANNEL_DIR (the output directory), GO (go).
set -euo pipefail

FLANNEL_VERSION=v0.28.9
PLUGINS_VERSION=v0.9.1
REF=weft.local/flannel:$FLANNEL_VERSION
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${WEFT_FLANNEL_DIR:-$HOME/.cache/weft/flannel-$FLANNEL_VERSION}"
go="${GO:-go}"

die() { echo "flannel-image: $*" >&2; exit 1; }

stamp="$({
  cat "$root/hack/flannel-image.sh" "$root/hack/lib/rootfs.sh"
  "$go" version
  buildah --version 2>/dev/null || true
  sha256sum <"$(readlink -f "$(command -v busybox || echo /dev/null)")"
  iptables --version 2>/dev/null || true
  nft --version 2>/dev/null || true
} | sha256sum | cut -d' ' -f1)"

# shellcheck source=lib/cache.sh
source "$root/hack/lib/cache.sh"
[ "$(id -u)" -eq 0 ] || cache_ready "$dir" "$stamp" flannel.tar kube-flannel.yml || die "needs root (buildah, the chroot check)"
cache_begin "$dir" "$stamp" flannel.tar kube-flannel.yml
command -v buildah >/dev/null || die "buildah is not installed: apt-get install -y --no-install-recommends buildah"
command -v gcc >/dev/null || die "gcc is not installed (flanneld's udp backend needs cgo): apt-get install -y --no-install-recommends gcc libc6-dev"
bah=(buildah --root "$tmp/storage" --runroot "$tmp/runroot" --storage-driver vfs)
cleanup() {
  "${bah[@]}" rmi --all --force >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

start=$(date +%s)
echo "building flanneld $FLANNEL_VERSION and flannel's CNI plugin ($PLUGINS_VERSION) into $dir (a cold build takes about 3 minutes)" >&2

# src NAME MODULE@VERSION: a writable copy of the module's source from the
# proxy, in $tmp/NAME.
src() {
  local d
  d="$("$go" mod download -json "$2" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [ -n "$d" ] || die "go mod download $2 failed"
  cp -r "$d" "$tmp/$1"
  chmod -R u+w "$tmp/$1"
  echo "$tmp/$1"
}

# --- flanneld ------------------------------------------------------------------
fl="$(src flannel-src "github.com/flannel-io/flannel@$FLANNEL_VERSION")"
grep -q 'pkg/backend/tencentvpc"' "$fl/main.go" || die "flannel's main.go no longer imports the tencentvpc backend: review this script"
sed -i '/pkg\/backend\/tencentvpc"/d' "$fl/main.go"
(cd "$fl" && "$go" mod edit -droprequire=github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc \
  -droprequire=github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/common)
(cd "$fl" && CGO_ENABLED=1 GOFLAGS=-mod=mod "$go" build -trimpath -tags netgo,osusergo \
  -ldflags "-s -w -X github.com/flannel-io/flannel/pkg/version.Version=$FLANNEL_VERSION -extldflags -static" \
  -o "$tmp/flanneld" .) >&2
got="$("$tmp/flanneld" --version 2>&1)" || die "flanneld --version failed: $got"
[ "$got" = "$FLANNEL_VERSION" ] || die "flanneld --version says $got, want $FLANNEL_VERSION"
if ldd "$tmp/flanneld" >/dev/null 2>&1; then die "flanneld is not static"; fi
# The manifest of flannel's release (the kube-flannel.yml users apply from
# its releases page), made as flannel's `make release` makes it: kustomize
# adds the label k8s-app: flannel to every object, the DaemonSet's selector
# included. (Documentation/kube-flannel.yml in flannel's tree lacks it in
# the selector; a DaemonSet made from that file cannot take kube-weft.yml's
# selector: docs/upgrade.md.)
kubectl="$(GO="$go" bash "$root/hack/kube-bins.sh")/kubectl"
"$kubectl" kustomize "$fl/Documentation/kustomization/kube-flannel/" >"$tmp/kube-flannel.yml" 2>"$tmp/kustomize.err" ||
  die "kubectl kustomize: $(cat "$tmp/kustomize.err")"
grep -q "ghcr.io/flannel-io/flannel:$FLANNEL_VERSION" "$tmp/kube-flannel.yml" || die "kube-flannel.yml does not name flannel $FLANNEL_VERSION"

# --- flannel's CNI plugin ------------------------------------------------------
pl="$(src plugins-src "github.com/containernetworking/plugins@$PLUGINS_VERSION")"
(cd "$pl" && CGO_ENABLED=0 GOFLAGS=-mod=mod "$go" build -trimpath -ldflags '-s -w' -o "$tmp/flannel" ./plugins/meta/flannel) >&2

# --- the image -----------------------------------------------------------------
rootfs="$tmp/ctx/rootfs"
# shellcheck source=lib/rootfs.sh
source "$root/hack/lib/rootfs.sh"
rootfs_base
rootfs_netfilter
rootfs_busybox sh cp mv rm ln mkdir cat ls chmod echo sleep
rootfs_install_conf
install -m 0755 "$tmp/flanneld" "$rootfs/opt/bin/flanneld"
install -m 0755 "$tmp/flannel" "$rootfs/flannel"
rootfs_check "/opt/bin/flanneld --version" "/usr/sbin/iptables -V" "/usr/sbin/iptables-legacy -V" \
  "/usr/sbin/ip6tables -V" "/usr/sbin/nft --version" "/usr/bin/cp --help"
cat >"$tmp/ctx/Containerfile" <<EOF
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/bin
LABEL org.opencontainers.image.title="flannel" org.opencontainers.image.version="$FLANNEL_VERSION"
ENTRYPOINT ["/opt/bin/flanneld"]
EOF
"${bah[@]}" build --quiet --timestamp 0 -f "$tmp/ctx/Containerfile" -t "$REF" "$tmp/ctx" >/dev/null
"${bah[@]}" push --quiet "$REF" "oci-archive:$tmp/flannel.tar:$REF" >&2

echo "built in $(($(date +%s) - start)) s: $(du -h "$tmp/flannel.tar" | cut -f1) flannel.tar" >&2
cache_commit "$dir" "$stamp" flannel.tar kube-flannel.yml
