//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/cluster"

	"github.com/weft-net/weft/internal/testenv"
)

// The store going away, and coming back different (issue 16 §4), under a
// 100 Hz pod ping against the real weftd processes of a lab.

// putPeer writes a vxlan lease for subnet that no weftd holds, attached to
// an etcd lease of ttl, as a node that then goes away would.
func putPeer(t *testing.T, c *cluster.Cluster, subnet netip.Prefix, ttl time.Duration) {
	t.Helper()
	v, _ := json.Marshal(map[string]any{"PublicIP": "192.168.100.250", "BackendType": "vxlan",
		"BackendData": map[string]any{"VNI": 1, "VtepMAC": "0a:00:00:00:00:fa"}})
	key := cluster.Prefix + "/subnets/" + strings.ReplaceAll(subnet.String(), "/", "-")
	if err := c.PutLeased(context.Background(), [][2]string{{key, string(v)}}, ttl); err != nil {
		t.Fatal(err)
	}
}

// resetLogged reports whether node's weftd logged that etcd was reset.
func resetLogged(c *cluster.Cluster, node int) bool {
	b, _ := os.ReadFile(c.LogFile(node))
	return strings.Contains(string(b), "etcd was reset")
}

// assertNoLoss waits for a floodPing's result and fails unless all count
// pings were answered; also unless no weftd of nodes took the fault for an
// etcd reset.
func assertNoLoss(t *testing.T, c *cluster.Cluster, res chan [2]int, count int, fault string, nodes ...int) {
	t.Helper()
	r := <-res
	if r[0] != count || r[1] != r[0] {
		t.Errorf("ping %s: %d sent, %d received; want %d and no loss", fault, r[0], r[1], count)
	}
	t.Logf("ping %s: %d sent, %d received", fault, r[0], r[1])
	for _, n := range nodes {
		if resetLogged(c, n) {
			t.Errorf("node %d took %s for an etcd reset", n, fault)
		}
	}
}

// etcd restarted from an empty data directory, then the network
// configuration written again: no ping lost; nodes 1 and 2 write their
// leases again with the same subnets within seconds; node 3, whose weftd
// is gone (stopped, data plane left in place), never does, and the others
// keep its routes (its lease would live 24 h); a peer lease on a 25 s TTL
// that nobody writes again is removed on every node once it would have
// expired.
func TestEtcdResetLosesNoPing(t *testing.T) {
	o := cluster.Options{Lab: lab.Options{Nodes: 3}, Pods: 1}
	c := up(t, o)
	pods := c.Pods()
	ctx := context.Background()
	envs := map[int]netip.Prefix{}
	for n := 1; n <= 3; n++ {
		env, err := c.SubnetEnv(n)
		if err != nil {
			t.Fatal(err)
		}
		envs[n] = env.Subnet.Masked()
	}
	if err := c.KillWeftd(3, false); err != nil {
		t.Fatal(err)
	}
	const count = 3500 // 35 s at 100 Hz: the whole test
	to2, _ := floodPing(t, pods[0].NS, pods[1].Addrs[0], count)
	to3, _ := floodPing(t, pods[0].NS, pods[2].Addrs[0], count)

	const ttl = 25 * time.Second
	short := freeSubnet(c, 3)
	granted := time.Now()
	putPeer(t, c, short, ttl)
	testenv.WaitFor(t, 5*time.Second, "the short-lived peer programmed", func() bool { return hasRoute(t, c, 1, short) && hasRoute(t, c, 2, short) })
	time.Sleep(6 * time.Second) // a reset check (every 5 s) learns its expiry

	if err := c.StopEtcd(0, true); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if err := c.StartEtcd(0); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	if err := c.Put(ctx, cluster.Prefix+"/config", o.NetConfJSON()); err != nil {
		t.Fatal(err)
	}
	configured := time.Now()
	for n := 1; n <= 2; n++ {
		testenv.WaitFor(t, 15*time.Second, "lease written again with the same subnet", func() bool {
			l, err := c.Lease(ctx, n)
			return err == nil && l.Subnet == envs[n]
		})
		t.Logf("node %d had its lease %s back %v after the configuration was written (%v after etcd served again)",
			n, envs[n], time.Since(configured).Round(10*time.Millisecond), time.Since(restarted).Round(10*time.Millisecond))
		if env, _ := c.SubnetEnv(n); env.Subnet.Masked() != envs[n] {
			t.Errorf("node %d subnet.env now has %s, want %s", n, env.Subnet, envs[n])
		}
	}
	if !resetLogged(c, 1) {
		t.Errorf("node 1 did not log the reset")
	}

	// The short-lived peer: kept until its lease would have expired, then
	// removed on both running nodes.
	if wait := time.Until(granted.Add(ttl - 2*time.Second)); wait > 0 {
		time.Sleep(wait)
	}
	for n := 1; n <= 2; n++ {
		if !hasRoute(t, c, n, short) {
			t.Errorf("node %d removed the route to %s %v after its lease was granted for %v", n, short, time.Since(granted).Round(10*time.Millisecond), ttl)
		}
	}
	testenv.WaitFor(t, time.Until(granted.Add(ttl+10*time.Second)), "the short-lived peer removed at its expiry", func() bool {
		return !hasRoute(t, c, 1, short) && !hasRoute(t, c, 2, short)
	})
	t.Logf("the peer that never came back removed %v after its lease was granted for %v", time.Since(granted).Round(10*time.Millisecond), ttl)
	// Node 3 never wrote its lease again; the others keep its routes.
	if _, err := c.Lease(ctx, 3); err == nil {
		t.Errorf("node 3's lease is back, but its weftd is stopped")
	}
	for n := 1; n <= 2; n++ {
		if !hasRoute(t, c, n, envs[3]) {
			t.Errorf("node %d removed its route to node 3's %s", n, envs[3])
		}
	}
	assertNoLoss(t, c, to2, count, "to the pod on node 2 across the reset")
	assertNoLoss(t, c, to3, count, "to the pod on node 3 across the reset")
}

// etcd killed for 30 s: no ping lost; a lease written after it is back is
// programmed within 1 s; nobody mistakes the restart for a reset.
func TestEtcdDownLosesNoPing(t *testing.T) {
	c := up(t, cluster.Options{Lab: lab.Options{Nodes: 2}, Pods: 1})
	pods := c.Pods()
	const count = 3600
	res, _ := floodPing(t, pods[0].NS, pods[1].Addrs[0], count)
	time.Sleep(time.Second)
	if err := c.StopEtcd(0, false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Second)
	if err := c.StartEtcd(0); err != nil {
		t.Fatal(err)
	}
	peer := freeSubnet(c, 2)
	putPeer(t, c, peer, time.Hour)
	took := testenv.WaitFor(t, time.Second, "a lease written after etcd came back programmed on both nodes",
		func() bool { return hasRoute(t, c, 1, peer) && hasRoute(t, c, 2, peer) })
	t.Logf("a lease written after etcd came back programmed on both nodes in %v", took.Round(10*time.Millisecond))
	assertNoLoss(t, c, res, count, "with etcd down for 30 s", 1, 2)
}

// Each of three etcd members (etcd-server processes) in turn killed and
// restarted, with leases added and deleted while it is down: no ping lost, no lease change missed on any
// node, and nobody mistakes it for a reset.
func TestEtcdMemberRestartLosesNoPing(t *testing.T) {
	bin := "/usr/bin/etcd"
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("%s not found (apt-get install etcd-server): %v", bin, err)
	}
	c := up(t, cluster.Options{Lab: lab.Options{Nodes: 2}, Pods: 1, EtcdBinary: bin, EtcdMembers: 3})
	pods := c.Pods()
	ctx := context.Background()
	var spare []netip.Prefix // /24s neither node leases
	for i := 230; len(spare) < 6; i++ {
		s := netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", i))
		if e1, _ := c.SubnetEnv(1); e1.Subnet.Masked() == s {
			continue
		}
		if e2, _ := c.SubnetEnv(2); e2.Subnet.Masked() == s {
			continue
		}
		spare = append(spare, s)
	}
	key := func(s netip.Prefix) string {
		return cluster.Prefix + "/subnets/" + strings.ReplaceAll(s.String(), "/", "-")
	}
	const count = 2500
	res, _ := floodPing(t, pods[0].NS, pods[1].Addrs[0], count)
	time.Sleep(time.Second)
	// Every member in turn, so the ones the weftds watch through are among them.
	for m := range 3 {
		putPeer(t, c, spare[2*m], time.Hour)
		if err := c.StopEtcd(m, false); err != nil {
			t.Fatal(err)
		}
		putPeer(t, c, spare[2*m+1], time.Hour)
		if err := c.Delete(ctx, key(spare[2*m])); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		if err := c.StartEtcd(m); err != nil {
			t.Fatal(err)
		}
	}
	took := testenv.WaitFor(t, 5*time.Second, "every lease change on both nodes", func() bool {
		for n := 1; n <= 2; n++ {
			for i, s := range spare {
				if hasRoute(t, c, n, s) != (i%2 == 1) {
					return false
				}
			}
		}
		return true
	})
	t.Logf("both nodes had every change %v after the last member was back", took.Round(10*time.Millisecond))
	assertNoLoss(t, c, res, count, "while etcd members were killed and restarted", 1, 2)
}
