#!/usr/bin/env bash
# Builds the Kubernetes node binaries of weft's lab (kubelet, kube-scheduler)
# from the module in hack/node (k8s.io/kubernetes v1.36.3, every staging module
# pinned), into ${WEFT_NODE_BIN_DIR:-$HOME/.cache/weft/node-v1.36.3}, and
# prints that directory on stdout (everything else goes to stderr).
#
# hack/node is a module of its own, apart from hack/kube (hack/kube-bins.sh,
# the control plane), so that kubelet's dependencies change neither hack/kube's
# go.sum nor the stamp of the control plane built from it.
#
# The binaries are built once: a stamp (the hash of hack/node/go.mod and
# go.sum, and of this script's build settings) next to them says what they were
# built from, and a second run with the same stamp does nothing. One `go build`
# builds both so the packages they share are compiled once. A lock keeps two
# runs from building together. Static (CGO_ENABLED=0), version-stamped as
# hack/kube-bins.sh does; `kubelet --version` is checked before the binaries
# are moved into place.
#
# Environment: WEFT_NODE_BIN_DIR (the output directory), GO (go).
set -euo pipefail

KUBE_VERSION=v1.36.3
root="$(cd "$(dirname "$0")/.." && pwd)"
mod="$root/hack/node"
dir="${WEFT_NODE_BIN_DIR:-$HOME/.cache/weft/node-$KUBE_VERSION}"
go="${GO:-go}"
bins=(kubelet kube-scheduler)

minor="${KUBE_VERSION#v1.}"
minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean"
done

stamp="$({ cat "$mod/go.mod" "$mod/go.sum"; echo "CGO_ENABLED=0 -trimpath $ldflags ${bins[*]}"; } | sha256sum | cut -d' ' -f1)"

# shellcheck source=lib/cache.sh
source "$root/hack/lib/cache.sh"
cache_begin "$dir" "$stamp" "${bins[@]}"

echo "building kubelet, kube-scheduler $KUBE_VERSION into $dir (a cold build takes several minutes)" >&2
start=$(date +%s)
(
  cd "$mod"
  CGO_ENABLED=0 "$go" build -trimpath -ldflags "$ldflags" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kube-scheduler
) >&2
for b in "${bins[@]}"; do
  got="$("$tmp/$b" --version 2>&1)" || { echo "node-bins: $b --version failed: $got" >&2; exit 1; }
  case "$got" in
    *" $KUBE_VERSION") echo "$got" >&2 ;;
    *) echo "node-bins: $b --version printed '$got', want $KUBE_VERSION" >&2; exit 1 ;;
  esac
done
echo "built in $(($(date +%s) - start)) s" >&2
cache_commit "$dir" "$stamp" "${bins[@]}"
