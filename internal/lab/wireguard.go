//go:build linux

package lab

import (
	"os"
	"path/filepath"

	"github.com/weft-net/weft/internal/backend/wireguard"
)

// The lab's nodes share one host's file system, where wireguard's defaults
// (/run/flannel/wgkey, /var/run/wireguard) would be every node's: each node
// gets a key file and a control socket directory in its own directory.

func wireGuardSocketDir(nodeDir string) string { return filepath.Join(nodeDir, "wireguard") }

func wireGuardArgs(nodeDir string) []string {
	return []string{"--wireguard-socket-dir", wireGuardSocketDir(nodeDir)}
}

func wireGuardEnv(nodeDir string) []string {
	return []string{"WIREGUARD_KEY_FILE=" + filepath.Join(nodeDir, "wgkey")}
}

// WireGuardExec wraps argv, to be run through lab.Command (whose `ip netns exec`
// gives it a mount namespace of its own), so that it sees the node's
// socket directory at /var/run/wireguard, where wg(8) looks: `wg show` then
// finds that node's userspace devices. The mount point is the host's
// directory: when the host has none, it is made for the command and removed
// after it. A node without the directory (not running wireguard) gets argv
// unchanged.
func WireGuardExec(nodeDir string, argv []string) []string {
	dir := wireGuardSocketDir(nodeDir)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return argv
	}
	return append([]string{"sh", "-c", wireGuardExecScript, dir}, argv...)
}

// wireGuardExecScript runs "$@" with "$0" bind-mounted at wireguard.DefaultSocketDir.
const wireGuardExecScript = `d=` + wireguard.DefaultSocketDir + `; made=
[ -d "$d" ] || { mkdir "$d" && made=1; } || exit 125
mount --bind "$0" "$d" || { [ -z "$made" ] || rmdir "$d"; exit 125; }
"$@"; rc=$?
umount "$d"
[ -z "$made" ] || rmdir "$d" 2>/dev/null
exit $rc`
