//go:build linux

package e2e

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weft-net/weft/deploy"
	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/cluster"
	"github.com/weft-net/weft/internal/lab/labtest"
	"github.com/weft-net/weft/internal/testenv"
)

// netpolRestartPings is the length of the 100 Hz ping that spans every
// restart (40 s): the restarts must end before it does.
const netpolRestartPings = 4000

// TestKubeNetworkPolicyRestart: NetworkPolicy stays enforced while weftd
// is away. With a deny-all policy of the namespace and a policy allowing
// n2p1 to n1p1 in force, weftd is killed (SIGKILL) and started again on
// both nodes, then stopped (SIGTERM, as a rolling update does) and started
// again, while
//
//   - n2p1 pings n1p1 at 100 Hz, echoes every 10 ms on an established TCP
//     connection to it and opens a new one every 10 ms: nothing is lost,
//     nothing fails;
//   - n1p1 pings n2p1 and opens TCP connections to it every 20 ms, which
//     deny-all denies: no reply, no connection.
//
// The table stays in the kernel while weftd is away, and the weftd that
// starts replaces it in one transaction (internal/netpol's Syncer), so
// there is no moment without the rules. (The real-node version, with
// weft's pod deleted and weftd killed under kubelet, is
// internal/lab/kubelet's TestKubeletNetpolPing.)
func TestKubeNetworkPolicyRestart(t *testing.T) {
	c := upKube(t, cluster.Options{Lab: lab.Options{Nodes: 2}, Pods: 1,
		WeftdArgs: []string{"--network-policy", "--ip-masq"}, Manifest: deploy.NetpolManifest})
	const ns, port = "nprestart", 8080
	registerPods(t, c, ns, port)
	pods := c.Pods()
	n1p1, n2p1 := pods[0], pods[1]
	for _, p := range pods {
		echoIn(t, p.NS, port)
	}
	applyPolicy(t, c, ns, `metadata: {name: deny-all, namespace: NS}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-n2p1, namespace: NS}
spec:
  podSelector: {matchLabels: {pod: n1p1}}
  ingress: [{from: [{podSelector: {matchLabels: {pod: n2p1}}}]}]
`)
	dst, denied := v4(t, n1p1), v4(t, n2p1)
	testenv.WaitFor(t, testenv.Scale(t, 10*time.Second), "n1p1 denied to n2p1", func() bool {
		return !connects(t, n1p1, denied, port, 200*time.Millisecond)
	})
	if !connects(t, n2p1, dst, port, 2*time.Second) {
		t.Fatal("n2p1 cannot reach n1p1, which allow-n2p1 allows")
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn := dialIn(t, n2p1, dst, port)
	ping := startPing(t, n2p1.NS, dst, netpolRestartPings)
	deniedPing := startPing(t, n1p1.NS, denied, netpolRestartPings)
	var flows, est labtest.Tally
	var probes sync.WaitGroup
	probes.Add(2)
	go labtest.NewFlows(ctx, lab.NSPath(n2p1.NS), netip.AddrPortFrom(dst, port), &flows, &probes)
	go labtest.Established(ctx, conn, &est, &probes)
	var tries, through atomic.Int64
	probes.Go(func() { deniedConnects(ctx, n1p1.NS, netip.AddrPortFrom(denied, port), &tries, &through) })
	testenv.WaitFor(t, testenv.Scale(t, 10*time.Second), "the probes to run", func() bool {
		f, _ := flows.Counts()
		e, _ := est.Counts()
		return f >= 100 && e >= 100 && tries.Load() >= 20
	})

	for _, hard := range []bool{true, false} {
		for n := 1; n <= 2; n++ {
			begin := time.Now()
			if err := c.KillWeftd(n, hard); err != nil {
				t.Fatal(err)
			}
			if err := c.StartWeftd(n); err != nil {
				t.Fatal(err)
			}
			if err := c.WaitReady(context.Background(), n); err != nil {
				t.Fatal(err)
			}
			t.Logf("n%d: weftd stopped (SIGKILL %v) and ready again in %v", n, hard, time.Since(begin).Round(time.Millisecond))
			time.Sleep(time.Second)
		}
	}
	if !ping.running() {
		t.Fatalf("the %d-echo ping ended before the restarts did: they were not all under it", netpolRestartPings)
	}
	cancel()
	probes.Wait()
	sent, recv := ping.wait(t)
	dsent, drecv := deniedPing.wait(t)
	t.Logf("allowed: 100 Hz ping n2p1 -> n1p1: %d sent, %d received; new connections: %s; established connection round trips: %s",
		sent, recv, &flows, &est)
	t.Logf("denied: ping n1p1 -> n2p1: %d sent, %d received; TCP connections: %d tried, %d connected", dsent, drecv, tries.Load(), through.Load())
	if sent != netpolRestartPings || recv != sent {
		t.Errorf("allowed ping across the restarts: %d sent, %d received; want %d and no loss", sent, recv, netpolRestartPings)
	}
	if _, f := flows.Counts(); f != 0 {
		t.Errorf("allowed new connections failed across the restarts: %s", &flows)
	}
	if _, f := est.Counts(); f != 0 {
		t.Errorf("the allowed established connection failed across the restarts: %s", &est)
	}
	if drecv != 0 || through.Load() != 0 {
		t.Errorf("denied traffic got through across the restarts: %d ping replies, %d TCP connections", drecv, through.Load())
	}
}

// deniedConnects tries a TCP connection from namespace ns to dst every
// 20 ms until ctx ends, counting the tries and those that connected.
func deniedConnects(ctx context.Context, ns string, dst netip.AddrPort, tries, through *atomic.Int64) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		conn, err := lab.DialContext(dctx, ns, "tcp", dst.String())
		cancel()
		if ctx.Err() != nil {
			return
		}
		tries.Add(1)
		if err == nil {
			through.Add(1)
			_ = conn.Close()
		}
	}
}
