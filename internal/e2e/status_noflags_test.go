//go:build linux

package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/cluster"
)

// weft status with no flags and an environment of PATH alone on a lab node whose
// weftd runs with --ip-masq and the lab's own etcd, health port and subnet
// file: it takes them from weftd's control socket and finds the node in
// sync (judged by its own defaults it would look for etcd on 127.0.0.1 and
// call the masquerade chain "present, not wanted"). A flag given wins. With
// weftd stopped, it falls back to its own flags and says within seconds
// which endpoint did not answer and which flag sets it.
func TestStatusNoFlags(t *testing.T) {
	c := up(t, cluster.Options{Lab: lab.Options{Nodes: 2}, Pods: 1, WeftdArgs: []string{"--ip-masq"}})
	weft := filepath.Join(bins.get(t), "weft")
	ctx := context.Background()
	status := func(args ...string) (int, string, time.Duration) {
		t.Helper()
		cmd := lab.Command(ctx, c.NodeNS(1), append([]string{weft, "status"}, args...)...)
		cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
		start := time.Now()
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out), time.Since(start)
		}
		if err != nil {
			t.Fatalf("weft status: %v\n%s", err, out)
		}
		return 0, string(out), time.Since(start)
	}
	code, out, _ := status()
	if code != 0 || !strings.Contains(out, "options  weftd (pid ") || !strings.Contains(out, "its command line and environment") ||
		!strings.Contains(out, "kernel   in sync with the store") || !strings.Contains(out, "weftd    ready: 1 peers programmed") ||
		strings.Contains(out, "not wanted") {
		t.Fatalf("weft status with no flags: exit %d\n%s", code, out)
	}
	// A flag given on the command line wins over weftd's, and is named.
	code, out, _ = status("--ip-masq=false")
	if code != 1 || !strings.Contains(out, "with --ip-masq=false from this command line") || !strings.Contains(out, "not wanted") {
		t.Errorf("weft status --ip-masq=false: exit %d, want 1 with the masquerade chain present, not wanted\n%s", code, out)
	}
	pid := c.Pid(1)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Kill(pid, syscall.SIGCONT) }()
	code, out, took := status()
	if code != 2 || !strings.Contains(out, "this command's flags and environment") ||
		!strings.Contains(out, "etcd at http://127.0.0.1:4001,http://127.0.0.1:2379 (--etcd-endpoints or FLANNELD_ETCD_ENDPOINTS)") {
		t.Errorf("weftd stopped, no flags: exit %d after %v, want 2 naming the endpoint and its flag\n%s", code, took, out)
	}
	// 2 s for weftd's answer, 5 s for the store, and the machine's load.
	if took > 15*time.Second {
		t.Errorf("weft status took %v to say the store did not answer", took)
	}
	t.Logf("weftd stopped, no flags (%v):\n%s", took.Round(time.Millisecond), out)
}
