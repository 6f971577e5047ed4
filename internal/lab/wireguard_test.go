//go:build linux

package lab

import (
	"os"
	"os/exec"
	"path/filepath"
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
