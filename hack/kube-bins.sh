#!/usr/bin/env bash
# Builds the Kubernetes control-plane binaries the kube lease store is tested
# against (kube-apiserver, kube-controller-manager, kubectl) from the module in
# hack/kube (k8s.io/kubernetes v1.36.3, every staging module pinned), into
# ${WEFT_KUBE_BIN_DIR:-$HOME/.cache/weft/kube-v1.36.3}, and prints that
# directory on stdout.
#
# The binaries are built once: a stamp (the hash of hack/kube/go.mod and
# go.sum) next to them says what they were built from, and a second run with
# the same stamp does nothing. One `go build` builds all three so the packages
# they share are compiled once. A lock keeps two runs from building together.
set -euo pipefail

KUBE_VERSION=v1.36.3
root="$(cd "$(dirname "$0")/.." && pwd)"
mod="$root/hack/kube"
dir="${WEFT_KUBE_BIN_DIR:-$HOME/.cache/weft/kube-$KUBE_VERSION}"
go="${GO:-go}"
bins=(kube-apiserver kube-controller-manager kubectl)

stamp="$(cat "$mod/go.mod" "$mod/go.sum" | sha256sum | cut -d' ' -f1)"

# shellcheck source=lib/cache.sh
source "$root/hack/lib/cache.sh"
cache_begin "$dir" "$stamp" "${bins[@]}"

minor="${KUBE_VERSION#v1.}"
minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean"
done

echo "building kube-apiserver, kube-controller-manager, kubectl $KUBE_VERSION into $dir (a cold build takes several minutes)" >&2
start=$(date +%s)
(
  cd "$mod"
  CGO_ENABLED=0 "$go" build -trimpath -ldflags "$ldflags" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl
)
echo "built in $(($(date +%s) - start)) s" >&2
cache_commit "$dir" "$stamp" "${bins[@]}"
