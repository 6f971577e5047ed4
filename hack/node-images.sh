#!/usr/bin/env bash
# Builds the two container images of weft's lab nodes without a registry or a
# base image, as OCI archives in ${WEFT_NODE_IMAGE_DIR:-$HOME/.cache/weft/node-images}
# (`ctr -n k8s.io images import` takes them), and prints that directory on
# stdout (everything else goes to stderr):
#
#   pause.tar    weft.local/pause:3.10, the pod sandbox image: FROM scratch,
#                /pause built static from hack/node-images/pause (holds the
#                pod's namespaces, reaps orphaned children, exits 0 on
#                SIGTERM), running as 65535:65535 like Kubernetes' own.
#   busybox.tar  weft.local/busybox:1, the test pods' image: FROM scratch,
#                Debian's busybox-static at /bin/busybox with links for sh,
#                ping, nc, ip, sleep, wget, cat, hostname (and echo, ls, ps,
#                env, id, kill, nslookup, ifconfig, route, arp, ping6,
#                traceroute), a minimal /etc/passwd and /etc/group, /tmp.
#
# buildah (Debian's `buildah`) builds them with the vfs driver in a storage of
# its own under the output directory (.storage: the host's container storage
# is not touched); the working containers and images it makes there are
# removed when it ends. buildah and busybox-static are installed with apt
# (--no-install-recommends) when missing. Needs root.
#
# The images are built once: a stamp (the hash of this script, the pause
# source, the Go and buildah versions and the busybox binary) next to them
# says what they were built from, and a second run with the same stamp does
# nothing. A lock keeps two runs from building together. --timestamp 0 and
# -trimpath make the images reproducible: the same inputs give the same
# manifest digests (the archives' own tar headers differ).
#
# Environment: WEFT_NODE_IMAGE_DIR (the output directory), GO (go).
set -euo pipefail

PAUSE_REF=weft.local/pause:3.10
BUSYBOX_REF=weft.local/busybox:1
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${WEFT_NODE_IMAGE_DIR:-$HOME/.cache/weft/node-images}"
go="${GO:-go}"
applets=(sh ping nc ip sleep wget cat hostname echo ls ps env id kill nslookup ifconfig route arp ping6 traceroute)

die() { echo "node-images: $*" >&2; exit 1; }

# buildah and busybox-static, from Debian, when missing (as hack/deps.sh does).
# shellcheck source=lib/apt.sh
source "$root/hack/lib/apt.sh"
apt_ensure node-images buildah=buildah busybox=busybox-static || exit 1
busybox="$(readlink -f "$(command -v busybox)")"
if ldd "$busybox" >/dev/null 2>&1; then
  die "$busybox is dynamically linked: install busybox-static"
fi

stamp="$({
  cat "$root/hack/node-images.sh" "$root/hack/node-images/pause/main.go"
  "$go" version
  buildah --version
  sha256sum <"$busybox"
} | sha256sum | cut -d' ' -f1)"

# shellcheck source=lib/cache.sh
source "$root/hack/lib/cache.sh"
[ "$(id -u)" -eq 0 ] || cache_ready "$dir" "$stamp" pause.tar busybox.tar || die "needs root (buildah with the vfs driver)"
cache_begin "$dir" "$stamp" pause.tar busybox.tar
bah=(buildah --root "$dir/.storage/root" --runroot "$dir/.storage/runroot" --storage-driver vfs)
cleanup() {
  # The storage is this script's own: every container and image in it is ours.
  "${bah[@]}" rm --all >/dev/null 2>&1 || true
  "${bah[@]}" rmi --all --force >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
cleanup_stale() { "${bah[@]}" rm --all >/dev/null 2>&1 || true; }
cleanup_stale # working containers a killed run left

start=$(date +%s)
echo "building $PAUSE_REF and $BUSYBOX_REF into $dir" >&2

# image REF ARCHIVE CONTEXT-DIR BUILDAH-CONFIG-ARGS...: FROM scratch, the
# directory's contents copied to /, the config set, committed, pushed to the
# archive (written beside it first, then moved).
image() {
  local ref=$1 out=$2 src=$3 ctr
  shift 3
  ctr="$("${bah[@]}" from --quiet scratch)"
  "${bah[@]}" copy --quiet "$ctr" "$src/" / >/dev/null
  "${bah[@]}" config --os linux --arch "$("$go" env GOARCH)" "$@" "$ctr"
  "${bah[@]}" commit --quiet --rm --timestamp 0 "$ctr" "$ref" >/dev/null
  "${bah[@]}" push --quiet "$ref" "oci-archive:$out.tmp:$ref" >&2
  "${bah[@]}" rmi --force "$ref" >/dev/null
  mv -f "$out.tmp" "$out"
}

# --- pause --------------------------------------------------------------------
mkdir -p "$tmp/pause"
(cd "$root" && CGO_ENABLED=0 "$go" build -trimpath -buildvcs=false -ldflags '-s -w' \
  -o "$tmp/pause/pause" ./hack/node-images/pause) >&2
"$tmp/pause/pause" --version >/dev/null || die "the pause binary does not run"
image "$PAUSE_REF" "$tmp/pause.tar" "$tmp/pause" \
  --entrypoint '["/pause"]' --user 65535:65535 --workingdir /

# --- busybox ------------------------------------------------------------------
rootfs="$tmp/busybox"
mkdir -p "$rootfs/bin" "$rootfs/etc"
mkdir -m 1777 "$rootfs/tmp"
install -m 0755 "$busybox" "$rootfs/bin/busybox"
have="$("$busybox" --list)"
for a in "${applets[@]}"; do
  grep -qx "$a" <<<"$have" || die "$busybox has no applet $a"
  ln -s busybox "$rootfs/bin/$a"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
image "$BUSYBOX_REF" "$tmp/busybox.tar" "$rootfs" \
  --cmd '["/bin/sh"]' --env PATH=/bin --workingdir /

echo "built in $(($(date +%s) - start)) s: $(du -h "$tmp/pause.tar" | cut -f1) pause.tar, $(du -h "$tmp/busybox.tar" | cut -f1) busybox.tar" >&2
cache_commit "$dir" "$stamp" pause.tar busybox.tar
