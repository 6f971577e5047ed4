#!/usr/bin/env bash
# Builds what runs Kubernetes' own NetworkPolicy end-to-end suite against
# weft's real-node lab, from the module in hack/e2e (k8s.io/kubernetes
# v1.36.3, every staging module pinned), into
# ${WEFT_E2E_BIN_DIR:-$HOME/.cache/weft/e2e-v1.36.3}, and prints that
# directory on stdout (everything else goes to stderr):
#
#   e2e.test    `go test -c` of hack/e2e/netpol: Kubernetes' e2e test binary
#               with only the specs of test/e2e/network/netpol ("[sig-network]
#               Netpol") linked in, and test/e2e's flags, suite set-up and
#               ginkgo run (internal/lab/kubelet's TestKubeletNetpolConformance
#               runs it as it would the whole suite's); 68 MB where the whole
#               suite's binary, every e2e area, was 109 MB and took a quarter
#               of an hour to build cold
#   agnhost     k8s.io/kubernetes/test/images/agnhost, the suite's servers
#               (porter) and clients (connect); hack/agnhost-image.sh puts it
#               in an image
#   kube-proxy  k8s.io/kubernetes/cmd/kube-proxy: the suite probes Service
#               ClusterIPs, so a lab that runs it starts one per node
#
# hack/e2e is a module of its own, apart from hack/kube, so that the suite's
# dependencies change neither hack/kube's go.sum nor the stamp of the cached
# control plane.
#
# The binaries are built once: a stamp (the hash of hack/e2e/go.mod, go.sum
# and netpol/*.go, and of this script's build settings) next to them says what they
# were built from, and a second run with the same stamp does nothing. A lock
# keeps two runs from building together. Static (CGO_ENABLED=0) and
# version-stamped as hack/kube-bins.sh does; each binary's version is checked
# before the binaries are moved into place.
#
# Environment: WEFT_E2E_BIN_DIR (the output directory), GO (go).
set -euo pipefail

KUBE_VERSION=v1.36.3
root="$(cd "$(dirname "$0")/.." && pwd)"
mod="$root/hack/e2e"
dir="${WEFT_E2E_BIN_DIR:-$HOME/.cache/weft/e2e-$KUBE_VERSION}"
go="${GO:-go}"
bins=(e2e.test agnhost kube-proxy)

minor="${KUBE_VERSION#v1.}"
minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean"
done

stamp="$({ cat "$mod/go.mod" "$mod/go.sum" "$mod"/netpol/*.go; echo "CGO_ENABLED=0 -trimpath $ldflags ${bins[*]}"; } | sha256sum | cut -d' ' -f1)"

# shellcheck source=lib/cache.sh
source "$root/hack/lib/cache.sh"
cache_begin "$dir" "$stamp" "${bins[@]}"

# agnhost has a version of its own (test/images/agnhost/VERSION), which its
# image's tag (hack/agnhost-image.sh) must match: the tag the suite asks for.
agnhost_version="$(cat "$(cd "$mod" && "$go" list -m -f '{{.Dir}}' k8s.io/kubernetes)/test/images/agnhost/VERSION")"

echo "building e2e.test, agnhost $agnhost_version, kube-proxy $KUBE_VERSION into $dir (a cold build takes a long while)" >&2
start=$(date +%s)
(
  cd "$mod"
  # -X main.Version sets agnhost's version; kube-proxy has no such variable.
  CGO_ENABLED=0 "$go" build -trimpath -ldflags "$ldflags -X main.Version=$agnhost_version" -o "$tmp/" \
    k8s.io/kubernetes/test/images/agnhost \
    k8s.io/kubernetes/cmd/kube-proxy
  echo "agnhost and kube-proxy built in $(($(date +%s) - start)) s" >&2
  CGO_ENABLED=0 "$go" test -c -trimpath -ldflags "$ldflags" -o "$tmp/e2e.test" ./netpol
) >&2
for b in e2e.test kube-proxy; do
  got="$("$tmp/$b" --version 2>&1)" || { echo "e2e-bins: $b --version failed: $got" >&2; exit 1; }
  case "$got" in
    *"$KUBE_VERSION"*) echo "$b: $got" >&2 ;;
    *) echo "e2e-bins: $b --version printed '$got', want $KUBE_VERSION" >&2; exit 1 ;;
  esac
done
got="$("$tmp/agnhost" --version 2>&1)" || { echo "e2e-bins: agnhost --version failed: $got" >&2; exit 1; }
case "$got" in
  *"$agnhost_version"*) echo "agnhost: $got" >&2 ;;
  *) echo "e2e-bins: agnhost --version printed '$got', want $agnhost_version" >&2; exit 1 ;;
esac
echo "built in $(($(date +%s) - start)) s" >&2
cache_commit "$dir" "$stamp" "${bins[@]}"
