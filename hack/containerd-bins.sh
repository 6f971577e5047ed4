#!/usr/bin/env bash
# Builds the container runtime of weft's lab (containerd, ctr and
# containerd-shim-runc-v2) from the module in hack/containerd
# (github.com/containerd/containerd/v2 v2.4.2), into
# ${WEFT_CONTAINERD_BIN_DIR:-$HOME/.cache/weft/containerd-v2.4.2}, and prints
# that directory on stdout (everything else goes to stderr). runc is Debian's
# (the `runc` package): it is installed with apt when `runc` is missing and
# this runs as root.
#
# The binaries are static (CGO_ENABLED=0) and built with containerd's own tags
# less what needs cgo: `no_btrfs urfave_cli_no_docs`, and `no_grpc` on top for
# the shim, as containerd's Makefile does (the btrfs snapshotter needs cgo; the
# overlayfs and native snapshotters are in). The version is stamped as
# containerd's Makefile does (`containerd --version` prints v2.4.2).
#
# The binaries are built once: a stamp (the hash of hack/containerd/go.mod
# and go.sum, and of this script's build settings) next to them says what they
# were built from, and a second run with the same stamp does nothing. A lock
# keeps two runs from building together.
#
# Environment: WEFT_CONTAINERD_BIN_DIR (the output directory), GO (go).
set -euo pipefail

CONTAINERD_VERSION=v2.4.2
root="$(cd "$(dirname "$0")/.." && pwd)"
mod="$root/hack/containerd"
dir="${WEFT_CONTAINERD_BIN_DIR:-$HOME/.cache/weft/containerd-$CONTAINERD_VERSION}"
go="${GO:-go}"
bins=(containerd ctr containerd-shim-runc-v2)
pkg=github.com/containerd/containerd/v2
tags="no_btrfs urfave_cli_no_docs"
shim_tags="$tags no_grpc"
ldflags="-s -w -X $pkg/version.Version=$CONTAINERD_VERSION -X $pkg/version.Package=$pkg"

# runc, from Debian, when it is missing (as hack/deps.sh does).
# shellcheck source=lib/apt.sh
source "$root/hack/lib/apt.sh"
apt_ensure containerd-bins runc=runc

stamp="$({ cat "$mod/go.mod" "$mod/go.sum"; echo "CGO_ENABLED=0 -trimpath $ldflags [$tags] [$shim_tags] ${bins[*]}"; } | sha256sum | cut -d' ' -f1)"

# shellcheck source=lib/cache.sh
source "$root/hack/lib/cache.sh"
cache_begin "$dir" "$stamp" "${bins[@]}"

echo "building containerd, ctr, containerd-shim-runc-v2 $CONTAINERD_VERSION into $dir (a cold build takes a few minutes)" >&2
start=$(date +%s)
(
  cd "$mod"
  CGO_ENABLED=0 "$go" build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$tmp/" \
    "$pkg/cmd/containerd" "$pkg/cmd/ctr"
  CGO_ENABLED=0 "$go" build -trimpath -tags "$shim_tags" -ldflags "$ldflags" -o "$tmp/" \
    "$pkg/cmd/containerd-shim-runc-v2"
) >&2
got="$("$tmp/containerd" --version 2>&1)" || { echo "containerd-bins: containerd --version failed: $got" >&2; exit 1; }
case "$got" in
  *" $CONTAINERD_VERSION"*) echo "$got" >&2 ;;
  *) echo "containerd-bins: containerd --version printed '$got', want $CONTAINERD_VERSION" >&2; exit 1 ;;
esac
echo "built in $(($(date +%s) - start)) s" >&2
cache_commit "$dir" "$stamp" "${bins[@]}"
