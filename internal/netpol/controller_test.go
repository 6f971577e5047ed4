package netpol

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBridgeCheck: br_netfilter's settings are set to 1 when 0, and a
// missing br_netfilter is reported, never ignored.
func TestBridgeCheck(t *testing.T) {
	dir := t.TempDir()
	c := &Controller{o: Options{ProcSys: dir}, log: slog.New(slog.DiscardHandler)}
	c.bridgeCheck()
	if !strings.Contains(c.bridge, "br_netfilter is not loaded") {
		t.Errorf("no br_netfilter: problem %q", c.bridge)
	}
	bridge := filepath.Join(dir, "net", "bridge")
	if err := os.MkdirAll(bridge, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables"} {
		if err := os.WriteFile(filepath.Join(bridge, f), []byte("0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c.bridgeCheck()
	if c.bridge != "" {
		t.Errorf("settings 0: problem %q, want none (set to 1)", c.bridge)
	}
	for _, f := range []string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables"} {
		if b, _ := os.ReadFile(filepath.Join(bridge, f)); strings.TrimSpace(string(b)) != "1" {
			t.Errorf("%s is %q, want 1", f, b)
		}
	}
}
