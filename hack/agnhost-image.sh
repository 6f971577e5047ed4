#!/usr/bin/env bash
# Builds the agnhost container image of Kubernetes' end-to-end suite without a
# registry or a base image, as an OCI archive in
# ${WEFT_E2E_IMAGE_DIR:-$HOME/.cache/weft/e2e-images} (`ctr -n k8s.io images
# import` takes it), and prints that directory on stdout (everything else goes
# to stderr):
#
#   agnhost.tar      weft.local/e2e-test-images/agnhost:<VERSION>: FROM scratch,
#                    the static /agnhost of hack/e2e-bins.sh, /tmp; entrypoint
#                    /agnhost, command pause, as upstream's image
#   repo-list.yaml   the KUBE_TEST_REPO_LIST file that points the suite's
#                    e2e-test-images registry (registry.k8s.io/e2e-test-images)
#                    at weft.local/e2e-test-images
#
# <VERSION> is agnhost's own (k8s.io/kubernetes' test/images/agnhost/VERSION,
# which `agnhost --version` prints): the tag the suite's
# imageutils.GetE2EImage(Agnhost) asks for. The suite's pods pull
# IfNotPresent, so the image imported into each node's containerd under that
# reference is used as it is.
#
# buildah (Debian's `buildah`) builds it with the vfs driver in a storage of
# its own under the output directory, as hack/node-images.sh does; buildah is
# installed with apt (--no-install-recommends) when missing. Needs root.
#
# The image is built once: a stamp (the hash of this script, the agnhost
# binary and the buildah version) next to it says what it was built from, and
# a second run with the same stamp does nothing. A lock keeps two runs from
# building together. --timestamp 0 makes the image reproducible.
#
# Environment: WEFT_E2E_IMAGE_DIR (the output directory), WEFT_E2E_BIN_DIR
# and GO (passed to hack/e2e-bins.sh).
set -euo pipefail

REGISTRY=weft.local/e2e-test-images
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${WEFT_E2E_IMAGE_DIR:-$HOME/.cache/weft/e2e-images}"
go="${GO:-go}"

die() { echo "agnhost-image: $*" >&2; exit 1; }

# shellcheck source=lib/apt.sh
source "$root/hack/lib/apt.sh"
apt_ensure agnhost-image buildah=buildah || exit 1

bindir="$(bash "$root/hack/e2e-bins.sh")"
agnhost="$bindir/agnhost"
version="$("$agnhost" --version 2>&1)" || die "$agnhost --version failed: $version"
version="${version##* }"
[[ "$version" =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?$ ]] || die "$agnhost --version printed no version: $version"
ref="$REGISTRY/agnhost:$version"

stamp="$({
  cat "$root/hack/agnhost-image.sh"
  sha256sum <"$agnhost"
  buildah --version
} | sha256sum | cut -d' ' -f1)"

# shellcheck source=lib/cache.sh
source "$root/hack/lib/cache.sh"
[ "$(id -u)" -eq 0 ] || cache_ready "$dir" "$stamp" agnhost.tar repo-list.yaml || die "needs root (buildah with the vfs driver)"
cache_begin "$dir" "$stamp" agnhost.tar repo-list.yaml
bah=(buildah --root "$dir/.storage/root" --runroot "$dir/.storage/runroot" --storage-driver vfs)
cleanup() {
  # The storage is this script's own: every container and image in it is ours.
  "${bah[@]}" rm --all >/dev/null 2>&1 || true
  "${bah[@]}" rmi --all --force >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
"${bah[@]}" rm --all >/dev/null 2>&1 || true # working containers a killed run left

start=$(date +%s)
echo "building $ref into $dir" >&2
rootfs="$tmp/rootfs"
mkdir -p "$rootfs"
mkdir -m 1777 "$rootfs/tmp"
install -m 0755 "$agnhost" "$rootfs/agnhost"
ctr="$("${bah[@]}" from --quiet scratch)"
"${bah[@]}" copy --quiet "$ctr" "$rootfs/" / >/dev/null
"${bah[@]}" config --os linux --arch "$("$go" env GOARCH)" --entrypoint '["/agnhost"]' --cmd '["pause"]' \
  --workingdir / "$ctr"
"${bah[@]}" commit --quiet --rm --timestamp 0 "$ctr" "$ref" >/dev/null
"${bah[@]}" push --quiet "$ref" "oci-archive:$tmp/agnhost.tar:$ref" >&2
"${bah[@]}" rmi --force "$ref" >/dev/null

# The suite's other registries are left as they are: the NetworkPolicy suite
# runs agnhost only.
printf 'promoterE2eRegistry: %s\n' "$REGISTRY" >"$tmp/repo-list.yaml"

echo "built in $(($(date +%s) - start)) s: $(du -h "$tmp/agnhost.tar" | cut -f1) agnhost.tar ($ref)" >&2
cache_commit "$dir" "$stamp" agnhost.tar repo-list.yaml
