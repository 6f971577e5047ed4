//go:build linux

package wireguard

import (
	"os"
	"path/filepath"
)

// The lab's nodes share one host's file system, where the defaults
// (/run/flannel/wgkey, /var/run/wireguard) would be every node's: each
// node gets a key file and a control socket directory in its own
// directory.

func labSocketDir(nodeDir string) string { return filepath.Join(nodeDir, "wireguard") }

func labEnv(nodeDir string) []string {
	return []string{"WIREGUARD_KEY_FILE=" + filepath.Join(nodeDir, "wgkey"), "WEFT_WIREGUARD_SOCKET_DIR=" + labSocketDir(nodeDir)}
}

// LabExec wraps argv, to be run through lab.Command (whose `ip netns exec`
// gives it a mount namespace of its own), so that it sees the node's
// socket directory at /var/run/wireguard, where wg(8) looks: `wg show` then
// finds that node's userspace devices. The mount point is the host's
// directory: when the host has none, it is made for the command and removed
// after it. A node without the directory (not running wireguard) gets argv
// unchanged.
func LabExec(nodeDir string, argv []string) []string {
	dir := labSocketDir(nodeDir)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return argv
	}
	return append([]string{"sh", "-c", labExecScript, dir}, argv...)
}

// labExecScript runs "$@" with "$0" bind-mounted at DefaultSocketDir.
const labExecScript = `d=` + DefaultSocketDir + `; made=
[ -d "$d" ] || { mkdir "$d" && made=1; } || exit 125
mount --bind "$0" "$d" || { [ -z "$made" ] || rmdir "$d"; exit 125; }
"$@"; rc=$?
umount "$d"
[ -z "$made" ] || rmdir "$d" 2>/dev/null
exit $rc`
