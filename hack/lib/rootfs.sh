# shellcheck shell=bash
# Sourced by hack/image.sh (weft's image) and hack/flannel-image.sh (flannel's,
# for the upgrade test): a container root filesystem assembled from this
# Debian host, without a base image. The caller sets $rootfs (the directory)
# and defines die.
#
#   rootfs_base                  Debian's merged-/usr layout, /tmp, /var/run,
#                                /etc/passwd and /etc/group for root, and the
#                                mount points of a flannel-shaped DaemonSet
#   rootfs_netfilter             iptables (xtables-nft-multi and
#                                xtables-legacy-multi, with Debian's names:
#                                the nft backend by default), nft, the xtables
#                                modules and exactly the shared libraries ldd
#                                names, and the files they read
#   rootfs_busybox APPLET...     busybox-static at /usr/bin/busybox and links
#                                for the applets (`cp` for init containers)
#   rootfs_install_conf          /opt/bin/install-conf SRC DST, the atomic copy
#                                of the CNI conflist that kube-flannel.yml's
#                                init container runs
#   rootfs_check CMD...          in a chroot: each CMD starts, and every
#                                library and xtables module resolves
#
# As root only (the chroot).

# rootfs_put PATH copies the file PATH resolves to into the same place in the
# root filesystem and, when PATH itself is a link (libc.so.6,
# ld-linux-x86-64.so.2 in /lib64), recreates that name as a link to it.
rootfs_put() {
  local path=$1 real dir name
  real=$(readlink -f "$path")
  [[ -f $real ]] || die "$path does not exist"
  if [[ ! -e $rootfs$real ]]; then
    mkdir -p "$rootfs$(dirname "$real")"
    cp -p "$real" "$rootfs$real"
  fi
  dir=$(readlink -f "$(dirname "$path")")
  name=$dir/$(basename "$path")
  if [[ $name != "$real" && ! -e $rootfs$name && ! -L $rootfs$name ]]; then
    mkdir -p "$rootfs$dir"
    ln -s "$(realpath --relative-to="$dir" "$real")" "$rootfs$name"
  fi
}

# rootfs_put_with_libs FILE... copies the FILEs and every shared library ldd
# says they need (ldd runs once: the xtables modules alone are over a hundred).
rootfs_put_with_libs() {
  local f libs
  for f in "$@"; do rootfs_put "$f"; done
  libs=$(ldd "$@") || die "ldd failed on one of: $*"
  if grep -q 'not found' <<<"$libs"; then
    die "a library this host does not have is needed: $(grep 'not found' <<<"$libs" | sort -u)"
  fi
  while read -r lib; do
    rootfs_put "$lib"
  done < <(awk '$2 == "=>" && $3 ~ /^\// {print $3; next} $1 ~ /^\// && $1 !~ /:$/ {print $1}' <<<"$libs" | sort -u)
}

rootfs_base() {
  local d
  # Debian's merged /usr: /bin, /sbin, /lib and /lib64 are links into /usr.
  mkdir -p "$rootfs"/usr/{bin,sbin,lib,lib64} "$rootfs"/{etc,run,opt/bin,usr/local/bin}
  for d in bin sbin lib lib64; do ln -s "usr/$d" "$rootfs/$d"; done
  mkdir -m 1777 "$rootfs/tmp"
  mkdir -p "$rootfs/var" && ln -s ../run "$rootfs/var/run"
  # Mount points of kube-flannel.yml and kube-weft.yml (a runtime creates
  # them too).
  mkdir -p "$rootfs"/{run/flannel,etc/kube-flannel,etc/cni/net.d,opt/cni/bin}
  printf 'root:x:0:0:root:/:/bin/sh\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\n' >"$rootfs/etc/group"
}

# The xtables modules of this host (set by rootfs_netfilter, read by
# rootfs_check).
rootfs_xtables_modules=()

rootfs_netfilter() {
  local b libdir fam sfx f
  for b in xtables-nft-multi xtables-legacy-multi nft; do
    [[ -x /usr/sbin/$b ]] || die "/usr/sbin/$b is missing: apt-get install -y iptables nftables"
  done
  # The xtables match and target modules (MASQUERADE, comment, mark, ...) are
  # loaded with dlopen from the directory next to libxtables.
  libdir=$(dirname "$(readlink -f "$(ldd /usr/sbin/xtables-nft-multi | awk '$1 == "libxtables.so.12" {print $3}')")")
  [[ -d $libdir/xtables ]] || die "no xtables modules in $libdir/xtables"
  rootfs_xtables_modules=("$libdir"/xtables/*.so)
  mkdir -p "$rootfs$libdir"
  cp -a "$libdir/xtables" "$rootfs$libdir/"
  rootfs_put_with_libs /usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi /usr/sbin/nft "${rootfs_xtables_modules[@]}"
  # iptables' names, as Debian's package and alternatives (nft backend by
  # default) make them.
  for fam in iptables ip6tables; do
    for sfx in "" -save -restore; do
      ln -s xtables-nft-multi "$rootfs/usr/sbin/$fam-nft$sfx"
      ln -s xtables-legacy-multi "$rootfs/usr/sbin/$fam-legacy$sfx"
      ln -s "$fam-nft$sfx" "$rootfs/usr/sbin/$fam$sfx"
    done
  done
  # Files iptables and nft may read: protocol and service names, the lock
  # iptables takes (/run/xtables.lock is mounted from the host in a cluster).
  for f in /etc/protocols /etc/services /etc/ethertypes; do
    if [[ -f $f ]]; then cp -p "$f" "$rootfs$f"; fi
  done
  printf 'hosts: files dns\nprotocols: files\nservices: files\n' >"$rootfs/etc/nsswitch.conf"
}

rootfs_busybox() {
  local busybox applet
  busybox=$(command -v busybox) || die "busybox is not installed: apt-get install -y busybox-static"
  if ldd "$busybox" >/dev/null 2>&1; then
    die "$busybox is dynamically linked: install busybox-static"
  fi
  cp -p "$busybox" "$rootfs/usr/bin/busybox"
  for applet in "$@"; do
    ln -s busybox "$rootfs/usr/bin/$applet"
  done
}

rootfs_install_conf() {
  cat >"$rootfs/opt/bin/install-conf" <<'EOF'
#!/bin/sh
# install-conf SRC DST: copies the CNI conflist SRC to DST through a
# temporary file in DST's directory and a rename, so that the container
# runtime never reads half a file.
set -eu
if [ $# -ne 2 ]; then echo "usage: install-conf SRC DST" >&2; exit 2; fi
tmp="$2.tmp.$$"
cp -f "$1" "$tmp"
mv -f "$tmp" "$2"
EOF
  chmod 0755 "$rootfs/opt/bin/install-conf"
}

rootfs_check() {
  local cmd f list missing=""
  for cmd in "$@"; do
    # shellcheck disable=SC2086 # the command is split on purpose
    chroot "$rootfs" $cmd >/dev/null 2>&1 || die "in the image, '$cmd' fails: $(chroot "$rootfs" $cmd 2>&1 | head -3)"
  done
  for f in /usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi /usr/sbin/nft "${rootfs_xtables_modules[@]}"; do
    list=$(chroot "$rootfs" /lib64/ld-linux-x86-64.so.2 --list "$f" 2>&1) || missing+="$f: $list"$'\n'
    if grep -q 'not found' <<<"$list"; then missing+="$f: $(grep 'not found' <<<"$list")"$'\n'; fi
  done
  [[ -z $missing ]] || die "libraries missing in the image: $missing"
}
