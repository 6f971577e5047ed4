//go:build linux

package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/weft-net/weft/internal/backend/wireguard"
	"github.com/weft-net/weft/internal/testenv"
)

// WireGuardExec shows a command the node's socket directory at
// /var/run/wireguard, passes its exit status through, and leaves the host
// without the directory when it had none.
func TestWireGuardExec(t *testing.T) {
	testenv.Privileged(t, "mounts in a mount namespace of its own", "unshare")
	node := t.TempDir()
	if err := os.MkdirAll(wireGuardSocketDir(node), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(wireGuardSocketDir(node), "flannel-wg.sock"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, statErr := os.Stat(wireguard.DefaultSocketDir)
	hadDir := statErr == nil
	run := func(argv ...string) (string, int) {
		wrapped := WireGuardExec(node, argv)
		cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private"}, wrapped...)...)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	if out, rc := run("ls", wireguard.DefaultSocketDir); rc != 0 || strings.TrimSpace(out) != "flannel-wg.sock" {
		t.Errorf("ls %s = %q (exit %d), want the node's socket", wireguard.DefaultSocketDir, out, rc)
	}
	if _, rc := run("sh", "-c", "exit 3"); rc != 3 {
		t.Errorf("exit status %d, want 3", rc)
	}
	if _, err := os.Stat(wireguard.DefaultSocketDir); !hadDir && err == nil {
		_ = os.Remove(wireguard.DefaultSocketDir)
		t.Errorf("%s was left on the host", wireguard.DefaultSocketDir)
	}
	if got := WireGuardExec(t.TempDir(), []string{"wg"}); len(got) != 1 {
		t.Errorf("a node without the directory: %v, want argv unchanged", got)
	}
}

// A lab node gets wireguard's control socket directory as a flag and its
// key file in the environment, both in the node's directory, and the other
// types need nothing.
func TestNodeFiles(t *testing.T) {
	if got := NodeArgs("/lab/n1"); strings.Join(got, " ") != "--wireguard-socket-dir /lab/n1/wireguard" {
		t.Errorf("NodeArgs = %q", got)
	}
	if got := NodeEnv("/lab/n1"); strings.Join(got, " ") != "WIREGUARD_KEY_FILE=/lab/n1/wgkey" {
		t.Errorf("NodeEnv = %q", got)
	}
	for _, d := range []string{"flannel.1", "flannel0", "flannel.ipip", "flannel-wg", "flannel-wg-v6"} {
		if !slices.Contains(BackendDevices(), d) {
			t.Errorf("BackendDevices lacks %s", d)
		}
	}
}
