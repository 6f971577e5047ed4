# shellcheck shell=bash
# Sourced by the hack/*-bins.sh and node-images.sh scripts: a build done once
# into a cache directory, next to a stamp that says what it was built from.
#
#   cache_begin DIR STAMP FILE...   when every FILE is in DIR and DIR/.stamp
#                                   is STAMP, prints DIR and exits 0; else takes
#                                   DIR/.lock (so two runs do not build
#                                   together), checks again, and sets $tmp to a
#                                   fresh build directory in DIR, removed at exit
#   cache_commit DIR STAMP FILE...  moves each FILE from $tmp into DIR, writes
#                                   the stamp and prints DIR
#
# A script that needs its own EXIT trap sets it after cache_begin and removes
# $tmp there too.

cache_ready() {
  local dir=$1 stamp=$2 f
  shift 2
  for f in "$@"; do
    [ -e "$dir/$f" ] || return 1
  done
  [ "$(cat "$dir/.stamp" 2>/dev/null)" = "$stamp" ]
}

cache_begin() {
  local dir=$1 stamp=$2
  if cache_ready "$@"; then
    echo "$dir"
    exit 0
  fi
  mkdir -p "$dir"
  exec 9>"$dir/.lock"
  flock 9
  if cache_ready "$@"; then # another run built it while we waited
    echo "$dir"
    exit 0
  fi
  tmp="$(mktemp -d "$dir/.build.XXXXXX")"
  # shellcheck disable=SC2064 # $tmp is fixed now
  trap "rm -rf '$tmp'" EXIT
  : "$stamp"
}

cache_commit() {
  local dir=$1 stamp=$2 f
  shift 2
  rm -f "$dir/.stamp"
  for f in "$@"; do
    mv -f "$tmp/$f" "$dir/$f"
  done
  echo "$stamp" >"$dir/.stamp"
  echo "$dir"
}
