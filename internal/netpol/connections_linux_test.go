package netpol

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/weft-net/weft/internal/lab/labtest"
	"github.com/weft-net/weft/internal/netfilter/netfiltertest"
	"github.com/weft-net/weft/internal/testenv"
)

// What happens to running connections when policies change: those a new
// set still allows keep working; those it denies are cut (their conntrack
// entries deleted by the Syncer), so their next packets meet the rules as
// a new connection's and are dropped.

// denyIngressY denies every ingress to namespace y's pods.
func denyIngressY() *Policy {
	return dpPol("y", "deny-all", networkingv1.NetworkPolicySpec{PodSelector: dpAll(), PolicyTypes: dpIngressOnly})
}

// tcpFlow is one established TCP connection from a pod to a pod's echo
// server.
type tcpFlow struct {
	client, server *dpPod
	fam            Family
	conn           net.Conn
}

func (f *tcpFlow) String() string {
	return fmt.Sprintf("%s -> %s IPv%d", f.client.Key(), f.server.Key(), f.fam)
}

func (f *tcpFlow) local() netip.AddrPort {
	return f.conn.LocalAddr().(*net.TCPAddr).AddrPort()
}

func testEstablished(t *testing.T, d *dpNet) {
	d.setPolicies(t)
	flows := []*tcpFlow{
		{client: d.pod("x/a"), server: d.pod("y/c"), fam: 4}, // cross-node
		{client: d.pod("x/b"), server: d.pod("y/a"), fam: 6}, // same node
		{client: d.pod("z/c"), server: d.pod("y/c"), fam: 6}, // same node (n2)
	}
	dialFlows(t, flows)
	rt := testenv.Scale(t, 3*time.Second)
	check := func(step string) {
		t.Helper()
		for _, f := range flows {
			if err := roundTrip(f.conn, f.conn, rt); err != nil {
				t.Fatalf("%s: %v: %v", step, f, err)
			}
		}
	}
	check("before any policy")
	// Changes that still allow the flows, each applied on top of the last.
	allowX := dpPol("y", "web-from-x-and-z", networkingv1.NetworkPolicySpec{PodSelector: dpAll(), Ingress: []networkingv1.NetworkPolicyIngressRule{
		{From: dpPeers(dpPeerNS("x", ""), dpPeerNS("z", "c")), Ports: dpPorts(tcpPort(80))}}})
	egressX := dpPol("x", "out-to-y", networkingv1.NetworkPolicySpec{PodSelector: dpAll(), PolicyTypes: dpEgressOnly,
		Egress: []networkingv1.NetworkPolicyEgressRule{{To: dpPeers(dpPeerNS("y", "")), Ports: dpPorts(tcpPort(80))}}})
	denyZB := dpPol("z", "deny-b", networkingv1.NetworkPolicySpec{PodSelector: podSel("b"), PolicyTypes: dpIngressOnly})
	steps := [][]*Policy{
		{denyZB},
		{denyZB, allowX},
		{denyZB, allowX, egressX},
		{allowX, egressX},
	}
	for i, ps := range steps {
		d.setPolicies(t, ps...)
		check(fmt.Sprintf("after change %d (%d policies)", i+1, len(ps)))
	}
	d.c.Pods["z/b"].Labels["moved"] = "yes"
	t.Cleanup(func() { delete(d.c.Pods["z/b"].Labels, "moved") })
	d.apply(t)
	check("after a label change")
	checkCut(t, d, flows)
	testServerSpeaksFirst(t, d)
}

// dialFlows connects each flow's client to its server's echo port 80.
func dialFlows(t *testing.T, flows []*tcpFlow) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(t, 5*time.Second))
	defer cancel()
	for _, f := range flows {
		c, err := dialIn(ctx, f.client.ns, "tcp", netip.AddrPortFrom(f.server.addr(f.fam), 80).String())
		if err != nil {
			t.Fatalf("%v: %v", f, err)
		}
		t.Cleanup(func() { abort(c) })
		f.conn = c
	}
}

// checkCut applies a deny of every flow and holds the syncers to cutting
// them at once: the entries gone from the servers' nodes' conntrack, no
// echo any more, the dropped packets on the deny's counters.
func checkCut(t *testing.T, d *dpNet, flows []*tcpFlow) {
	t.Helper()
	cutBefore := map[*dpNode]uint64{}
	for _, n := range d.nodes {
		cutBefore[n] = n.syncer.Stats().Cut
	}
	before := d.counters(t)
	start := time.Now()
	d.setPolicies(t, denyIngressY())
	took := time.Since(start)
	if took > testenv.Scale(t, time.Second) {
		t.Errorf("applying the deny (and cutting) took %v, over 1 s", took)
	}
	for _, f := range flows {
		if fl, err := labtest.ConntrackFlow(f.server.node.ns, f.local()); !errors.Is(err, labtest.ErrNoFlow) {
			t.Errorf("%v: the server's node still tracks it after the deny (%v, %v)", f, fl, err)
		}
		if err := roundTrip(f.conn, f.conn, testenv.Scale(t, time.Second)); err == nil {
			t.Errorf("%v: data still flows after the deny", f)
		}
	}
	// The cut flows' next packets are dropped where the table says why:
	// on a drop counter of the server's node (the deny's, or one of
	// packets that are no connection's first).
	after := d.counters(t)
	for _, n := range d.nodes {
		deny := n.name + "/" + n.rs.Policies["y/deny-all"].Counters[Ingress]
		var all uint64
		for key, v := range after {
			if strings.HasPrefix(key, n.name+"/") {
				all += v - before[key]
			}
		}
		if all == 0 {
			t.Errorf("node %s: no drop counter counted a packet of the cut flows", n.name)
		}
		t.Logf("node %s: cut %d connections; %s counted %d packets, all its counters %d",
			n.name, n.syncer.Stats().Cut-cutBefore[n], deny, after[deny]-before[deny], all)
	}
	t.Logf("the deny was applied, the flows cut, in %v", took.Round(time.Millisecond))
}

// testServerSpeaksFirst cuts a connection whose server, not its client,
// sends the next packet: that packet must not take the connection back (a
// tracked connection picked up in the middle, with the server as its
// originator, would let the client's packets through as its replies).
func testServerSpeaksFirst(t *testing.T, d *dpNet) {
	d.setPolicies(t)
	client, server := d.pod("x/a"), d.pod("y/c")
	ln := labtest.ListenIn(t, server.ns, server.addr(4))
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(t, 5*time.Second))
	defer cancel()
	cc, err := dialIn(ctx, client.ns, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer abort(cc)
	sc, ok := <-accepted
	if !ok {
		t.Fatal("the server accepted no connection")
	}
	defer abort(sc)
	wait := testenv.Scale(t, time.Second)
	if err := oneWay(sc, cc, wait); err != nil {
		t.Fatalf("before the deny: server to client: %v", err)
	}
	d.setPolicies(t, denyIngressY())
	if err := oneWay(sc, cc, wait); err == nil {
		t.Errorf("%s -> %s: after the deny cut it, the server's next segment reached the client "+
			"(conntrack picked the connection up again with the server as its originator)", client.Key(), server.Key())
	}
	if err := oneWay(cc, sc, wait); err == nil {
		t.Errorf("%s -> %s: after the deny cut it, the client's data reached the server", client.Key(), server.Key())
	}
}

// abort closes a TCP connection with a reset and drops what it had to
// send: a cut connection would otherwise go on retransmitting for minutes,
// into the drop counters of the tests after it.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// oneWay sends a message from a to b and reads it at b within wait.
func oneWay(a, b net.Conn, wait time.Duration) error {
	msg := []byte("weft")
	if err := a.SetWriteDeadline(time.Now().Add(wait)); err != nil {
		return err
	}
	if _, err := a.Write(msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err := b.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	_, err := b.Read(buf)
	return err
}

// pingFlow is ping(8) sending 100 echo requests a second, with the times of
// the replies it got.
type pingFlow struct {
	cmd     *exec.Cmd
	mu      sync.Mutex
	replies []time.Time // ping's own timestamps (-D)
	done    chan struct{}
}

func startPing(t *testing.T, ns string, dst netip.Addr) *pingFlow {
	t.Helper()
	pf := &pingFlow{done: make(chan struct{})}
	pf.cmd = exec.Command("stdbuf", "-oL", "ping", "-n", "-D", "-i", "0.01", dst.String())
	out, err := pf.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := netfiltertest.InNS(ns, pf.cmd.Start); err != nil {
		t.Fatalf("start ping: %v", err)
	}
	go func() {
		defer close(pf.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			// [1700000000.123456] 64 bytes from 10.244.2.15: icmp_seq=1 ttl=63 time=0.1 ms
			line := sc.Text()
			stamp, rest, ok := strings.Cut(strings.TrimPrefix(line, "["), "]")
			if !ok || !strings.Contains(rest, "bytes from") {
				continue
			}
			secs, err := strconv.ParseFloat(stamp, 64)
			if err != nil {
				continue
			}
			pf.mu.Lock()
			pf.replies = append(pf.replies, time.Unix(0, int64(secs*1e9)))
			pf.mu.Unlock()
		}
	}()
	t.Cleanup(func() { pf.stop() })
	return pf
}

func (pf *pingFlow) stop() {
	_ = pf.cmd.Process.Kill()
	<-pf.done
	_ = pf.cmd.Wait()
}

// repliesAfter returns the replies received after since, the first one's
// time, and the last one's.
func (pf *pingFlow) repliesAfter(since time.Time) (n int, first, last time.Time) {
	pf.mu.Lock()
	defer pf.mu.Unlock()
	for _, r := range pf.replies {
		if r.After(since) {
			if n == 0 {
				first = r
			}
			n++
			last = r
		}
	}
	return n, first, last
}

// waitReplies polls until a reply after since arrives, up to limit.
func (pf *pingFlow) waitReplies(since time.Time, limit time.Duration) (time.Time, bool) {
	for end := time.Now().Add(limit); ; time.Sleep(10 * time.Millisecond) {
		if n, first, _ := pf.repliesAfter(since); n > 0 {
			return first, true
		}
		if time.Now().After(end) {
			return time.Time{}, false
		}
	}
}

func testPingFlow(t *testing.T, d *dpNet) {
	d.setPolicies(t)
	flows := []struct {
		client, server string
		fam            Family
	}{{"x/a", "y/c", 4}, {"z/b", "y/a", 6}}
	var pings []*pingFlow
	start := time.Now()
	for _, f := range flows {
		pf := startPing(t, d.pod(f.client).ns, d.pod(f.server).addr(f.fam))
		if _, ok := pf.waitReplies(start, testenv.Scale(t, 5*time.Second)); !ok {
			t.Fatalf("ping %s -> %s IPv%d: no reply before any policy", f.client, f.server, f.fam)
		}
		pings = append(pings, pf)
	}
	limit := testenv.Scale(t, time.Second)
	denied := time.Now()
	d.setPolicies(t, denyIngressY())
	// Watch a second past the limit for replies that should not come.
	time.Sleep(time.Until(denied.Add(limit + time.Second)))
	for i, pf := range pings {
		n, _, last := pf.repliesAfter(denied.Add(limit))
		_, _, lastAny := pf.repliesAfter(denied.Add(-time.Hour))
		if n > 0 {
			t.Errorf("ping %s -> %s: %d replies more than %v after the deny (the last %v after it)", flows[i].client, flows[i].server, n, limit, last.Sub(denied))
		} else {
			t.Logf("ping %s -> %s IPv%d: the last reply came %v after the deny", flows[i].client, flows[i].server, flows[i].fam, lastAny.Sub(denied).Round(time.Millisecond))
		}
	}
	allowed := time.Now()
	d.setPolicies(t)
	for i, pf := range pings {
		first, ok := pf.waitReplies(allowed, limit)
		if !ok {
			t.Errorf("ping %s -> %s: no reply within %v of the policy's removal", flows[i].client, flows[i].server, limit)
			continue
		}
		t.Logf("ping %s -> %s IPv%d: replies again %v after the policy's removal", flows[i].client, flows[i].server, flows[i].fam, first.Sub(allowed).Round(time.Millisecond))
	}
}
