//go:build linux

package kubelet

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/testenv"
)

// EnvKubelet selects the real-node lab tests (each takes about half a minute
// or more and needs the binaries of hack/node-bins.sh,
// hack/containerd-bins.sh, hack/node-images.sh, hack/kube-bins.sh, make
// build and make image).
const EnvKubelet = "WEFT_TEST_KUBELET"

// lockWait bounds how long a test waits for another kubelet lab (another
// test process's) to go down: only one may be up at a time.
const lockWait = 5 * time.Minute

// testLab is a lab of a test, with the test's Down.
type testLab struct {
	*Lab
	bins Bins
	// down takes the lab down (once) and checks that nothing is left; it is
	// also a Cleanup of the test.
	down func()
}

// startLab skips t unless the real-node lab tests are selected, then brings
// up a lab of nodes nodes (waiting up to lockWait for another kubelet lab to
// go down) that is taken down, and checked for leftovers, when t ends or
// when the returned down is called.
func startLab(t *testing.T, ctx context.Context, nodes int) *testLab {
	t.Helper()
	return startLabWith(t, ctx, func(o *Options) { o.Nodes = nodes })
}

// startLabWith is startLab with the Options changed by mod.
func startLabWith(t *testing.T, ctx context.Context, mod func(*Options)) *testLab {
	t.Helper()
	testenv.EndToEnd(t, "runs containerd and kubelet in every node of a lab", "ip", "nsenter", "unshare", "iptables", "runc",
		"ping")
	if os.Getenv(EnvKubelet) != "1" {
		t.Skipf("set %s=1 to run the real-node lab (containerd and kubelet per node; about half a minute)", EnvKubelet)
	}
	repo, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	bins, err := FindBins(ctx, repo)
	if err != nil {
		t.Fatalf("binaries: %v", err)
	}
	name, err := lab.RandomName("wk")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "lab")
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	tl := &testLab{bins: bins}
	downed := false
	tl.down = func() {
		t.Helper()
		if downed {
			return
		}
		downed = true
		if tl.Lab == nil {
			if err := Purge(context.WithoutCancel(ctx), log, name, dir); err != nil {
				t.Errorf("purge: %v", err)
			}
			return
		}
		if t.Failed() {
			t.Logf("logs:\n%s", tl.Logs(20))
		}
		begin := time.Now()
		if err := tl.Down(context.WithoutCancel(ctx)); err != nil {
			t.Errorf("down: %v", err)
		}
		t.Logf("down in %v", time.Since(begin).Round(time.Millisecond))
		if left := tl.Leftovers(); len(left) > 0 {
			t.Errorf("left after down:\n  %s", strings.Join(left, "\n  "))
		}
	}
	t.Cleanup(tl.down) // Down is idempotent: this is for a test that stops early

	begin := time.Now()
	o := Options{Name: name, Dir: dir, Bins: bins, Logger: log, LockWait: lockWait}
	mod(&o)
	tl.bins = o.Bins
	l, err := Up(ctx, o)
	if err != nil {
		t.Fatalf("up: %v", err)
	}
	tl.Lab = l
	t.Logf("up in %v", time.Since(begin).Round(time.Millisecond))
	for _, p := range l.Phases() {
		t.Logf("  %-55s %v", p.Name, p.Took.Round(time.Millisecond))
	}
	return tl
}

// TestKubeletLab brings up a 3-node lab of real nodes (containerd and
// kubelet per node, weft by its manifest), checks that the test pods on
// every node ping each other through `kubectl exec`, takes it down and
// checks that nothing is left: namespaces, processes, mounts, cgroups, host
// paths, sysctls, the lock.
func TestKubeletLab(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	l := startLab(t, ctx, 3)
	mem := l.Memory()
	var names []string
	for k := range mem {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		t.Logf("  RSS %-25s %6.1f MB", k, float64(mem[k])/1024)
	}
	pods, err := l.TestPods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	nodes := map[string]bool{}
	for _, p := range pods {
		t.Logf("  pod %v", p)
		nodes[p.Node()] = true
	}
	if len(nodes) != 3 {
		t.Errorf("test pods on %d nodes, want 3", len(nodes))
	}
	begin := time.Now()
	results, err := l.PingAll(ctx)
	t.Logf("ping matrix (%d pings through kubectl exec) in %v", len(results), time.Since(begin).Round(time.Millisecond))
	for _, r := range results {
		status := "ok"
		if r.Err != nil {
			status = "FAIL"
		}
		t.Logf("  %s -> %s (%s): %s", r.FromNode, r.ToNode, r.Dst, status)
	}
	if err != nil {
		t.Errorf("ping: %v", err)
	}
	if len(results) != 6 {
		t.Errorf("%d pings, want 6", len(results))
	}
	l.down()
}
