//go:build linux

package kubelet

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/labtest"
)

// netpolCutBound is how long after `kubectl apply` of a deny-all policy
// returns a 100 Hz ping may still be answered, and after `kubectl delete`
// returns until it is answered again: the goal, 1 s.
const netpolCutBound = time.Second

// netpolCycles is how many times the deny-all policy is applied and
// deleted.
const netpolCycles = 5

// TestKubeletNetpolPing: NetworkPolicy on real nodes (weft deployed by
// deploy/kube-weft-netpol.yml) under a 100 Hz ping between the test pods of
// the two nodes, a (on the first node) to b:
//   - DenyAll: a deny-all policy of the test namespace cuts the ping within
//     netpolCutBound of kubectl apply's return, and deleting it lets it
//     through again within netpolCutBound, netpolCycles times;
//   - Changes: with deny-all and a policy allowing a to b in force, policies
//     selecting b that allow other peers are added and removed, and the
//     allowing policy is changed into other allowing policies, while a pings
//     b, echoes on an established TCP connection to b and opens new ones:
//     nothing is lost and nothing fails;
//   - Restarts: the same flows while weft's pod is deleted on each node and
//     then weftd is killed (SIGKILL) on each node: nothing allowed is lost,
//     and nothing denied (b to a, by ping and by TCP) gets through.
func TestKubeletNetpolPing(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Minute)
	defer cancel()
	l := startLabWith(t, ctx, func(o *Options) { o.Nodes, o.NetworkPolicy = 2, true })
	pods := podsByNode(t, ctx, l)
	a, b := pods[0], pods[1]
	for _, p := range []struct {
		pod  podInfo
		role string
	}{{a, "np-a"}, {b, "np-b"}} {
		if _, err := l.cp.Kubectl(ctx, "label", "pod", "-n", TestNamespace, p.pod.name, "role="+p.role); err != nil {
			t.Fatal(err)
		}
	}
	ok := t.Run("DenyAll", func(t *testing.T) { testNetpolDenyAll(t, ctx, l, a, b) })
	ok = ok && t.Run("Changes", func(t *testing.T) { testNetpolChanges(t, ctx, l, a, b) })
	if ok {
		t.Run("Restarts", func(t *testing.T) { testNetpolRestarts(t, ctx, l, a, b) })
	}
	l.down()
}

const npDenyAll = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: ` + TestNamespace + `}
spec: {podSelector: {}, policyTypes: [Ingress]}
`

// testNetpolDenyAll applies and deletes deny-all netpolCycles times under
// a 100 Hz ping from a to b.
func testNetpolDenyAll(t *testing.T, ctx context.Context, l *testLab, a, b podInfo) {
	p := l.startTSPing(t, ctx, a, b)
	var cuts, restores []time.Duration
	for i := range netpolCycles {
		p.waitReply(t, time.Now(), 10*time.Second)
		if err := l.cp.Apply(ctx, npDenyAll); err != nil {
			t.Fatal(err)
		}
		applied := time.Now()
		// Cut: no reply for 2 s, at least 2 s after the apply returned.
		last := p.waitSilent(t, applied, 2*time.Second, 30*time.Second)
		cuts = append(cuts, last.Sub(applied))
		if _, err := l.cp.Kubectl(ctx, "delete", "networkpolicy", "-n", TestNamespace, "deny-all"); err != nil {
			t.Fatal(err)
		}
		deleted := time.Now()
		first := p.waitReply(t, deleted, 30*time.Second)
		restores = append(restores, first.Sub(deleted))
		t.Logf("cycle %d: last reply %v after kubectl apply returned; first reply %v after kubectl delete returned (load average %s)",
			i+1, last.Sub(applied).Round(time.Millisecond), first.Sub(deleted).Round(time.Millisecond), npLoadAverage())
	}
	st := p.stop()
	t.Logf("ping %s: %v", p.name, st)
	slices.Sort(cuts)
	slices.Sort(restores)
	t.Logf("deny-all: last reply after apply returned %v (sorted); first reply after delete returned %v (sorted); bound %v",
		npRound(cuts), npRound(restores), netpolCutBound)
	for i := range cuts {
		if cuts[i] > netpolCutBound || restores[i] > netpolCutBound {
			t.Errorf("cut after %v, restored after %v: want both within %v", cuts[i], restores[i], netpolCutBound)
		}
	}
}

func npRound(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

func npLoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// npAllowAB is the policy allowing a to b (its ingress), in one of three
// shapes that all allow it: by pod selector, by ipBlock after a rule that
// matches nothing the test sends, and by namespace and pod selector.
func npAllowAB(name string, shape int, aIP netip.Addr) string {
	from := []string{
		`[{from: [{podSelector: {matchLabels: {role: np-a}}}]}]`,
		fmt.Sprintf(`[{from: [{ipBlock: {cidr: 192.0.2.0/24}}]}, {from: [{ipBlock: {cidr: %s/32}}]}]`, aIP),
		`[{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ` + TestNamespace + `}}, podSelector: {matchLabels: {role: np-a}}}]}]`,
	}[shape]
	return fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: %s, namespace: %s}
spec: {podSelector: {matchLabels: {role: np-b}}, policyTypes: [Ingress], ingress: %s}
`, name, TestNamespace, from)
}

// npUnrelated returns n policies selecting b that allow peers the test never
// uses.
func npUnrelated(n int) string {
	var docs []string
	for i := range n {
		docs = append(docs, fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: unrelated-%02d, namespace: %s}
spec: {podSelector: {matchLabels: {role: np-b}}, policyTypes: [Ingress], ingress: [{from: [{ipBlock: {cidr: 198.51.100.%d/32}}], ports: [{port: %d}]}]}
`, i, TestNamespace, i, 9000+i))
	}
	return strings.Join(docs, "---\n")
}

// npFlows are a's allowed flows to b: a 100 Hz ping, an established TCP
// connection echoing every 10 ms and a new TCP connection every 10 ms.
type npFlows struct {
	ping       *tsPinger
	est, newer labtest.Tally
	stop       func()
}

func (l *testLab) startFlows(t *testing.T, ctx context.Context, a, b podInfo) *npFlows {
	t.Helper()
	srv := podEchoServer(t, l, b)
	aNS := l.podNetNS(t, a)
	conn, err := labtest.DialFrom(ctx, aNS, "tcp", srv.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	f := &npFlows{ping: l.startTSPing(t, ctx, a, b)}
	fctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go labtest.Established(fctx, conn, &f.est, &wg)
	go labtest.NewFlows(fctx, aNS, srv, &f.newer, &wg)
	f.stop = func() { cancel(); wg.Wait() }
	t.Cleanup(f.stop)
	deadline := time.Now().Add(30 * time.Second)
	for {
		e, _ := f.est.Counts()
		n, _ := f.newer.Counts()
		if e >= 50 && n >= 50 {
			return f
		}
		if time.Now().After(deadline) {
			t.Fatalf("flows a to b not running after 30 s: established %s, new %s", &f.est, &f.newer)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// check stops the flows and fails t if anything was lost.
func (f *npFlows) check(t *testing.T, what string) {
	t.Helper()
	f.stop()
	st := f.ping.stop()
	t.Logf("%s: ping %s: %v", what, f.ping.name, st)
	t.Logf("%s: established connection round trips: %s; new connections: %s", what, &f.est, &f.newer)
	if st.Lost != 0 || st.Answered < 100 {
		t.Errorf("%s: ping lost %d (answered %d): want none lost", what, st.Lost, st.Answered)
	}
	if _, n := f.est.Counts(); n != 0 {
		t.Errorf("%s: the established connection failed: %s", what, &f.est)
	}
	if _, n := f.newer.Counts(); n != 0 {
		t.Errorf("%s: new connections failed: %s", what, &f.newer)
	}
}

// testNetpolChanges changes the policies around an allowed flow.
func testNetpolChanges(t *testing.T, ctx context.Context, l *testLab, a, b podInfo) {
	nb := l.nodeByName(b.node)
	apply := func(what, manifest string, args ...string) {
		t.Helper()
		before := netpolTable(t, ctx, nb)
		begin := time.Now()
		var err error
		if manifest != "" {
			err = l.cp.Apply(ctx, manifest)
		} else {
			_, err = l.cp.Kubectl(ctx, args...)
		}
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if err := l.poll(ctx, what+": node "+nb.name+"'s table changed", func() (bool, string, error) {
			return netpolTable(t, ctx, nb) != before, "", nil
		}); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: in %s's table %v after the command began", what, nb.name, time.Since(begin).Round(time.Millisecond))
	}
	apply("deny-all and allow a to b", npDenyAll+"---\n"+npAllowAB("allow-ab", 0, a.ip))
	f := l.startFlows(t, ctx, a, b)
	apply("20 policies selecting b that allow other peers added", npUnrelated(20))
	del := []string{"delete", "networkpolicy", "-n", TestNamespace}
	for i := range 20 {
		del = append(del, fmt.Sprintf("unrelated-%02d", i))
	}
	apply("the 20 deleted", "", del...)
	apply("allow-ab changed to allow a by ipBlock", npAllowAB("allow-ab", 1, a.ip))
	apply("allow-ab2 (namespace and pod selector) added", npAllowAB("allow-ab2", 2, a.ip))
	apply("allow-ab deleted", "", "delete", "networkpolicy", "-n", TestNamespace, "allow-ab")
	time.Sleep(2 * time.Second)
	f.check(t, "policy changes")
}

// netpolTable lists weft's table on node n without its counters' values.
func netpolTable(t *testing.T, ctx context.Context, n *node) string {
	t.Helper()
	out, err := lab.Command(ctx, n.ns, "nft", "list", "table", "inet", "weft-netpol").CombinedOutput()
	if err != nil {
		t.Fatalf("node %s: nft list table: %v: %s", n.name, err, out)
	}
	return npCountersRe.ReplaceAllString(string(out), "")
}

var npCountersRe = regexp.MustCompile(`packets \d+ bytes \d+`)

// testNetpolRestarts restarts weftd on both nodes, by its pod and by
// SIGKILL, with deny-all and allow-ab2 in force.
func testNetpolRestarts(t *testing.T, ctx context.Context, l *testLab, a, b podInfo) {
	f := l.startFlows(t, ctx, a, b)
	denied := l.startDenied(t, ctx, b, a)
	for _, n := range l.nodes {
		l.replaceWeftPod(t, ctx, n)
	}
	for _, n := range l.nodes {
		l.killWeftd(t, ctx, n)
	}
	time.Sleep(2 * time.Second)
	f.check(t, "weftd restarts")
	denied.check(t)
}

// npDenied is b's ping and TCP connections to a, which deny-all denies.
type npDenied struct {
	ping      *tsPinger
	attempts  atomic.Int64
	successes atomic.Int64
	stop      func()
}

func (l *testLab) startDenied(t *testing.T, ctx context.Context, from, to podInfo) *npDenied {
	t.Helper()
	ln := podListen(t, l.podNetNS(t, to), to.ip)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_ = conn.Close()
		}
	}()
	d := &npDenied{ping: l.startTSPingNoWait(t, from, to)}
	fromNS := l.podNetNS(t, from)
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-pctx.Done():
				return
			case <-tick.C:
			}
			dctx, dcancel := context.WithTimeout(pctx, 200*time.Millisecond)
			conn, err := labtest.DialFrom(dctx, fromNS, "tcp", ln.Addr().String())
			dcancel()
			if pctx.Err() != nil {
				return
			}
			d.attempts.Add(1)
			if err == nil {
				d.successes.Add(1)
				_ = conn.Close()
			}
		}
	}()
	d.stop = func() { cancel(); <-done }
	t.Cleanup(d.stop)
	return d
}

func (d *npDenied) check(t *testing.T) {
	t.Helper()
	d.stop()
	st := d.ping.stop()
	t.Logf("denied: ping %s: %v; TCP connections: %d attempts, %d connected", d.ping.name, st, d.attempts.Load(), d.successes.Load())
	if st.Answered != 0 || d.successes.Load() != 0 {
		t.Errorf("denied traffic got through: %d ping replies, %d TCP connections", st.Answered, d.successes.Load())
	}
	if st.Sent < 100 || d.attempts.Load() < 100 {
		t.Errorf("the denied probes hardly ran: %d pings sent, %d connection attempts", st.Sent, d.attempts.Load())
	}
}

// replaceWeftPod deletes weft's pod on node n and waits for its successor
// to be Running and ready, then a few more seconds.
func (l *testLab) replaceWeftPod(t *testing.T, ctx context.Context, n *node) {
	t.Helper()
	before, err := l.weftPods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	old, ok := before[n.name]
	if !ok || !old.running {
		t.Fatalf("no Running weft pod on %s: %v", n.name, before)
	}
	begin := time.Now()
	if _, err := l.cp.Kubectl(ctx, "delete", "pod", "-n", WeftNamespace, old.name, "--wait=false"); err != nil {
		t.Fatal(err)
	}
	if err := l.poll(ctx, "a new weft pod ready on "+n.name, func() (bool, string, error) {
		ps, err := l.weftPods(ctx)
		if err != nil {
			return false, "", err
		}
		q := ps[n.name]
		return q.name != old.name && q.running && q.ready, q.name + ":" + q.phase, nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("weft pod %s on %s deleted; its successor ready after %v", old.name, n.name, time.Since(begin).Round(time.Millisecond))
	time.Sleep(3 * time.Second)
}

// killWeftd kills weftd on node n with SIGKILL and waits until kubelet has
// started it again and its pod is ready, then a few more seconds.
func (l *testLab) killWeftd(t *testing.T, ctx context.Context, n *node) {
	t.Helper()
	pid := weftdPid(n)
	if pid == 0 {
		t.Fatalf("no weftd process on %s", n.name)
	}
	begin := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := l.poll(ctx, "weftd running again on "+n.name, func() (bool, string, error) {
		p := weftdPid(n)
		if p == 0 || p == pid {
			return false, "no new weftd", nil
		}
		ps, err := l.weftPods(ctx)
		if err != nil {
			return false, "", err
		}
		return ps[n.name].ready, "pod not ready", nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("weftd (pid %d) on %s killed; a new one running and its pod ready after %v", pid, n.name, time.Since(begin).Round(time.Millisecond))
	time.Sleep(3 * time.Second)
}

// weftdPid returns the pid of the weftd process in node n's cgroups, 0
// when there is none.
func weftdPid(n *node) int {
	for _, d := range cgroupDirs(n.cgroupRoot) {
		b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			comm, _ := os.ReadFile(filepath.Join("/proc", f, "comm"))
			if strings.TrimSpace(string(comm)) == "weftd" {
				pid, _ := strconv.Atoi(f)
				return pid
			}
		}
	}
	return 0
}
