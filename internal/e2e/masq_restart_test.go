//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/cluster"
	"github.com/weft-net/weft/internal/lab/labtest"

	"github.com/weft-net/weft/internal/testenv"
)

// restartPings is the length of the 100 Hz ping that spans both restarts
// (20 s): the restarts must end before it does.
const restartPings = 2000

// A restart of weftd must not cut a node's pods off the outside world
// (flannel#2237: FLANNEL-POSTRTG flushed and re-added at start; #2145: rules
// judged missing and recreated). On node 1, with --ip-masq and the rules
// re-checked every second, weftd is killed with -9 and started again, then
// stopped with SIGTERM (as a rolling update does) and started again, while a
// pod on node 1 reaches a host outside the cluster network, masqueraded:
//
//   - a 100 Hz ping loses nothing;
//   - a new TCP connection every 10 ms (each a new conntrack entry, which
//     needs the masquerade rule when it starts) never fails;
//   - an established TCP connection echoes every 10 ms throughout, and its
//     conntrack entry is the same one after each restart (same tuples, the
//     same randomised masquerade port, the same creation time, its packet
//     counter still counting);
//   - the restarted weftd, up to two resyncs after it is ready, runs only
//     listings and version queries (a PATH shim records every iptables and
//     nft command), and weft's rules keep their order, their place after
//     another's rules in POSTROUTING and FORWARD, and their kernel handles
//     (`nft -a`: a rule deleted and added again gets a new one); in
//     iptables mode their packet counters keep counting up.
//
// In iptables mode node 1's FORWARD policy is DROP (as Docker sets it), so
// a moment without weft's forward rules would lose pings too.
func TestRestartKeepsMasqueradedFlows(t *testing.T) {
	for _, nft := range []bool{false, true} {
		t.Run(map[bool]string{false: "iptables", true: "nftables"}[nft], func(t *testing.T) {
			testRestartKeepsMasqueradedFlows(t, nft)
		})
	}
}

func testRestartKeepsMasqueradedFlows(t *testing.T, nft bool) {
	shim := newNetfilterShim(t)
	conf := fmt.Sprintf(`{"Network":"10.244.0.0/16","EnableNFTables":%t}`, nft)
	c := up(t, cluster.Options{Lab: lab.Options{Nodes: 2, Outside: true}, Pods: 1, NetConf: conf,
		WeftdArgs: []string{"--ip-masq", "--iptables-resync", "1"}, WeftdEnv: []string{shim.env()}})
	ns := c.NodeNS(1)
	if w := writes(shim.take(t, ns)); len(w) == 0 {
		t.Fatal("the shim recorded no write at weftd's first start: it does not see weftd's commands")
	}
	labtest.TrackFlows(t, ns)
	rules := func(ctx context.Context, ns string) ([]labtest.Rule, error) {
		return labtest.NFTRules(ctx, ns, "ip", "flannel-ipv4")
	}
	if !nft {
		rules = labtest.IPTablesRules
		// Another's rules first in POSTROUTING and FORWARD (never matched),
		// and Docker's FORWARD policy.
		run(t, ns, "iptables", "-t", "nat", "-I", "POSTROUTING", "1", "-d", "192.0.2.0/24", "-m", "comment", "--comment", "someone else", "-j", "RETURN")
		run(t, ns, "iptables", "-t", "filter", "-I", "FORWARD", "1", "-d", "192.0.2.0/24", "-m", "comment", "--comment", "someone else", "-j", "DROP")
		run(t, ns, "iptables", "-t", "filter", "-P", "FORWARD", "DROP")
	}
	pod := podOn(t, c, 1)
	out, _ := c.Lab().Outside()
	srv := labtest.EchoServer(t, out.NS, out.Addrs()[0])
	if got := peerAddr(t, pod.NS, out.NS, out.Addrs()[0]); got != nodeAddr(t, c, 1) {
		t.Fatalf("the outside host saw %s, want node 1's %s (masqueraded)", got, nodeAddr(t, c, 1))
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := labtest.DialFrom(ctx, lab.NSPath(pod.NS), "tcp", srv.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	local := conn.LocalAddr().(*net.TCPAddr).AddrPort()
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	ping := startPing(t, pod.NS, out.Addrs()[0], restartPings)
	var flows, est labtest.Tally
	var probes sync.WaitGroup
	probes.Add(2)
	go labtest.NewFlows(ctx, lab.NSPath(pod.NS), srv, &flows, &probes)
	go labtest.Established(ctx, conn, &est, &probes)
	testenv.WaitFor(t, 10*time.Second, "the probes to run", func() bool {
		f, _ := flows.Counts()
		e, _ := est.Counts()
		return f >= 100 && e >= 100
	})

	for _, hard := range []bool{true, false} {
		restartKeeps(t, c, shim, rules, local, hard, nft)
	}
	if !ping.running() {
		t.Fatalf("the %d-echo ping ended before the restarts did: they were not all under it", restartPings)
	}
	cancel()
	probes.Wait()
	sent, recv := ping.wait(t)
	t.Logf("100 Hz ping from %s to %s: %d sent, %d received; new connections: %s; established connection round trips: %s",
		pod.NS, out.Addrs()[0], sent, recv, &flows, &est)
	if sent != restartPings || recv != sent {
		t.Errorf("ping across the restarts: %d sent, %d received; want %d and no loss", sent, recv, restartPings)
	}
	_, ff := flows.Counts()
	_, ef := est.Counts()
	if ff != 0 || ef != 0 {
		t.Errorf("new connections: %s; established connection: %s; want no failure", &flows, &est)
	}
}

// restartKeeps restarts node 1's weftd (kill -9 when hard, else SIGTERM)
// and checks its start-up and two resyncs: only reads, weft's rules as they
// were, the established flow's conntrack entry the same.
func restartKeeps(t *testing.T, c *cluster.Cluster, shim netfilterShim, rules func(context.Context, string) ([]labtest.Rule, error),
	local netip.AddrPort, hard, nft bool) {
	t.Helper()
	ctx := context.Background()
	ns, how := c.NodeNS(1), map[bool]string{true: "kill -9", false: "SIGTERM"}[hard]
	before, err := rules(ctx, ns)
	if err != nil {
		t.Fatal(err)
	}
	ctBefore, err := labtest.ConntrackFlow(ns, local)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.KillWeftd(1, hard); err != nil {
		t.Fatal(err)
	}
	shim.take(t, ns) // the old weftd's calls
	if err := c.StartWeftd(1); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctx, 1); err != nil {
		t.Fatalf("after %s: %v", how, err)
	}
	// The start-up pass and two resyncs: three listings of weft's chain or table.
	listing := "-S FLANNEL-POSTRTG"
	if nft {
		listing = "list table ip flannel-ipv4"
	}
	var calls []string
	testenv.WaitFor(t, 15*time.Second, "two resyncs after the restart", func() bool {
		calls = append(calls, shim.take(t, ns)...)
		return strings.Count(strings.Join(calls, ""), listing) >= 3
	})
	after, err := rules(ctx, ns)
	if err != nil {
		t.Fatal(err)
	}
	ctAfter, err := labtest.ConntrackFlow(ns, local)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after %s: weftd ran %d commands, %d of them writes:\n  %s", how, len(calls), len(writes(calls)),
		strings.Join(commandLines(calls), "\n  "))
	for _, w := range writes(calls) {
		t.Errorf("after %s, with the rules in place, weftd wrote: %s", how, w)
	}
	for _, d := range labtest.CompareRules(before, after) {
		t.Errorf("after %s: %s", how, d)
	}
	t.Logf("after %s, weft's rules (packets before -> after):%s", how, labtest.FormatRules(before, after))
	if !nft && !labtest.Counting(before, after) {
		t.Errorf("after %s: no counter of weft's rules went up, so counters prove nothing", how)
	}
	t.Logf("after %s: conntrack entry before: %s; after: %s", how, ctBefore, ctAfter)
	if !ctBefore.Same(ctAfter) {
		t.Errorf("after %s: the established connection's conntrack entry changed:\n  before: %s\n  after:  %s", how, ctBefore, ctAfter)
	}
	if ctAfter.Packets <= ctBefore.Packets {
		t.Errorf("after %s: the conntrack entry's packets did not go up (%d, then %d)", how, ctBefore.Packets, ctAfter.Packets)
	}
}

// commandLines returns each call's command line, without its stdin.
func commandLines(calls []string) []string {
	out := make([]string, len(calls))
	for i, c := range calls {
		out[i] = strings.SplitN(c, "\n", 2)[0]
	}
	return out
}

func podOn(t *testing.T, c *cluster.Cluster, node int) cluster.Pod {
	t.Helper()
	for _, p := range c.Pods() {
		if p.Node == node && len(p.Addrs) > 0 {
			return p
		}
	}
	t.Fatalf("no pod on node %d", node)
	return cluster.Pod{}
}

func nodeAddr(t *testing.T, c *cluster.Cluster, node int) netip.Addr {
	t.Helper()
	h, err := c.Lab().Node(node)
	if err != nil {
		t.Fatal(err)
	}
	return h.Addrs()[0]
}
