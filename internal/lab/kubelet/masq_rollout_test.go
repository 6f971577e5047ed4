//go:build linux

package kubelet

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/lab/labtest"
)

// rolloutResyncs is how long the test watches the new weftd pods after the
// rollout: two of the manifest's --iptables-resync periods (flannel's
// default, 5 s) and a margin, so that a resync judging the rules missing
// would show too (flannel#2145).
const rolloutResyncs = 12 * time.Second

// TestKubeletRolloutKeepsMasqueradedFlows: on a 2-node lab with an outside
// host (not in the cluster; the manifest's --ip-masq masquerades pods'
// traffic to it), weft's DaemonSet is rolled to a new image, one node at a
// time, while every test pod reaches the outside host: a 100 Hz ping, a new
// TCP connection every 10 ms, and an established connection echoing every
// 10 ms. Nothing is lost, no connection fails, and on every node, after the
// rollout and two resyncs of the new weftd, weft's rules are the same rules
// (the same nftables handles of iptables-nft, in the same order, their
// packet counters still counting) and the established connection's
// conntrack entry is the same one (flannel#2237: FLANNEL-POSTRTG flushed
// and re-added when the pod restarts).
func TestKubeletRolloutKeepsMasqueradedFlows(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	l := startLabWith(t, ctx, func(o *Options) { o.Nodes, o.Outside = 2, true })
	out, ok := l.cl.Lab().Outside()
	if !ok {
		t.Fatal("the lab has no outside host")
	}
	dst := podInfo{name: "outside", node: out.NS, ip: out.Addrs()[0]}
	srv := labtest.EchoServer(t, out.NS, dst.ip)
	pods := podsByNode(t, ctx, l)
	watched := make([]*nodeWatch, len(pods))
	for i, p := range pods {
		watched[i] = l.watchNode(t, ctx, p, srv)
	}

	probeCtx, stopProbes := context.WithCancel(ctx)
	defer stopProbes()
	var probes sync.WaitGroup
	var pings []*pinger
	for _, w := range watched {
		pings = append(pings, l.startPing(t, ctx, w.pod, dst))
		probes.Add(2)
		go labtest.NewFlows(probeCtx, w.netns, srv, &w.flows, &probes)
		go labtest.Established(probeCtx, w.conn, &w.est, &probes)
	}
	for _, w := range watched {
		w.waitProbes(t)
	}
	for _, w := range watched {
		w.snapshot(t, ctx, &w.before, &w.ctBefore)
	}

	before, err := l.weftPods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := imageRef(l.bins.WeftImage)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range l.nodes {
		if _, err := n.ctr(ctx, l.bins, "images", "tag", "--force", ref, upgradeTag); err != nil {
			t.Fatalf("node %s: %v", n.name, err)
		}
	}
	m, err := Manifest(upgradeTag)
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if err := l.cp.Apply(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := l.waitRollout(ctx, upgradeTag, before); err != nil {
		t.Fatal(err)
	}
	t.Logf("rollout of %d weft pods done in %v; watching %v more", len(l.nodes), time.Since(begin).Round(time.Millisecond), rolloutResyncs)
	time.Sleep(rolloutResyncs)
	for _, w := range watched {
		w.snapshot(t, ctx, &w.after, &w.ctAfter)
	}
	stopProbes()
	probes.Wait()
	for i, p := range pings {
		st := p.stop()
		t.Logf("ping %s at ~100 Hz: %v", p.name, st)
		if st.Answered < 300 || st.Lost != 0 {
			t.Errorf("ping %s across the rollout: %d answered, %d lost; want at least 300 and none lost", p.name, st.Answered, st.Lost)
		}
		watched[i].check(t)
	}
}

// nodeWatch is what the test watches on one node: its test pod's flows to
// the outside host and weft's rules.
type nodeWatch struct {
	n          *node
	pod        podInfo
	netns      string // the pod's network namespace, /proc/<pid>/ns/net
	conn       net.Conn
	local      netip.AddrPort
	flows, est labtest.Tally

	before, after     []labtest.Rule
	ctBefore, ctAfter labtest.Flow
}

// watchNode turns on conntrack timestamps and counters on p's node and
// connects p to the outside echo server srv.
func (l *testLab) watchNode(t *testing.T, ctx context.Context, p podInfo, srv netip.AddrPort) *nodeWatch {
	t.Helper()
	w := &nodeWatch{n: l.nodeByName(p.node), pod: p}
	if w.n == nil {
		t.Fatalf("pod %s: no node %s", p.name, p.node)
	}
	labtest.TrackFlows(t, w.n.ns)
	pid, err := l.podNetPID(p)
	if err != nil {
		t.Fatal(err)
	}
	w.netns = "/proc/" + strconv.Itoa(pid) + "/ns/net"
	if w.conn, err = labtest.DialFrom(ctx, w.netns, "tcp", srv.String()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.conn.Close() })
	a := w.conn.LocalAddr().(*net.TCPAddr).AddrPort()
	w.local = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
	return w
}

// waitProbes waits until both probes of the node have succeeded 50 times.
func (w *nodeWatch) waitProbes(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		f, _ := w.flows.Counts()
		e, _ := w.est.Counts()
		if f >= 50 && e >= 50 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s: probes not running after 30 s: new connections %s, established %s", w.n.name, &w.flows, &w.est)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// snapshot lists weft's rules and the established connection's conntrack
// entry on the node.
func (w *nodeWatch) snapshot(t *testing.T, ctx context.Context, rules *[]labtest.Rule, ct *labtest.Flow) {
	t.Helper()
	var err error
	if *rules, err = labtest.IPTablesRules(ctx, w.n.ns); err != nil {
		t.Fatalf("node %s: %v", w.n.name, err)
	}
	if *ct, err = labtest.ConntrackFlow(w.n.ns, w.local); err != nil {
		t.Fatalf("node %s: %v", w.n.name, err)
	}
}

// check fails t if the node's flows failed, its rules changed or its
// established connection's conntrack entry is another one.
func (w *nodeWatch) check(t *testing.T) {
	t.Helper()
	name := w.n.name
	t.Logf("node %s: new connections to the outside: %s; established connection round trips: %s", name, &w.flows, &w.est)
	if _, f := w.flows.Counts(); f != 0 {
		t.Errorf("node %s: new connections failed across the rollout: %s", name, &w.flows)
	}
	if _, f := w.est.Counts(); f != 0 {
		t.Errorf("node %s: the established connection failed across the rollout: %s", name, &w.est)
	}
	t.Logf("node %s: weft's rules (packets before -> after the rollout):%s", name, labtest.FormatRules(w.before, w.after))
	for _, d := range labtest.CompareRules(w.before, w.after) {
		t.Errorf("node %s: %s", name, d)
	}
	if !labtest.Counting(w.before, w.after) {
		t.Errorf("node %s: no counter of weft's rules went up, so counters prove nothing", name)
	}
	t.Logf("node %s: conntrack entry before: %s; after: %s", name, w.ctBefore, w.ctAfter)
	if !w.ctBefore.Same(w.ctAfter) || w.ctAfter.Packets <= w.ctBefore.Packets {
		t.Errorf("node %s: the established connection's conntrack entry is not the same, still counting:\n  before: %s\n  after:  %s",
			name, w.ctBefore, w.ctAfter)
	}
}
