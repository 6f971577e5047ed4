# shellcheck shell=bash
# Sourced by hack/deps.sh, hack/containerd-bins.sh and hack/node-images.sh:
# Debian packages installed when the commands they provide are missing.
#
#   apt_ensure WHO CMD=PACKAGE...   installs the packages of the missing
#                                   commands (as root), or fails naming the
#                                   apt-get line to run; WHO prefixes messages
#   apt_install PACKAGE...          apt-get install, waiting for another apt
#                                   or dpkg that holds the lock
#
# APT_LOCK_TIMEOUT (seconds, default 600) bounds the wait for the dpkg lock:
# a CI machine's own unattended upgrade may hold it for minutes.

apt_install() {
  local timeout=${APT_LOCK_TIMEOUT:-600} pkg need_update=no
  export DEBIAN_FRONTEND=noninteractive
  # The package lists are fetched only when apt does not know a package yet
  # (a fresh machine), not on every call.
  for pkg in "$@"; do
    apt-cache show "$pkg" >/dev/null 2>&1 || need_update=yes
  done
  if [ "$need_update" = yes ]; then
    apt-get -o DPkg::Lock::Timeout="$timeout" update -qq >&2
  fi
  # No recommends: wireguard-tools and friends would otherwise pull in a kernel image.
  apt-get -o DPkg::Lock::Timeout="$timeout" install -y -qq --no-install-recommends "$@" >/dev/null
}

apt_ensure() {
  local who=$1 pair missing=()
  shift
  for pair in "$@"; do
    command -v "${pair%%=*}" >/dev/null 2>&1 || missing+=("${pair#*=}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "$who: missing ${missing[*]}; run as root, or: apt-get install -y --no-install-recommends ${missing[*]}" >&2
    return 1
  fi
  echo "$who: installing ${missing[*]}" >&2
  apt_install "${missing[@]}"
}
