//go:build linux

package e2e

import (
	"context"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/cluster"
	"github.com/weft-net/weft/internal/testenv"
)

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// floodPing runs `ping -i 0.01` from pod for d and returns (sent, received).
func floodPing(t *testing.T, pod string, dst netip.Addr, count int) (chan [2]int, error) {
	t.Helper()
	out := make(chan [2]int, 1)
	cmd := lab.Command(context.Background(), pod, "ping", "-n", "-q", "-i", "0.01", "-W", "1", "-c", strconv.Itoa(count), dst.String())
	go func() {
		b, _ := cmd.CombinedOutput()
		m := pingSummary.FindStringSubmatch(string(b))
		if m == nil {
			t.Errorf("ping output: %s", b)
			out <- [2]int{-1, -1}
			return
		}
		sent, _ := strconv.Atoi(m[1])
		recv, _ := strconv.Atoi(m[2])
		out <- [2]int{sent, recv}
	}()
	return out, nil
}

func vtep(t *testing.T, c *cluster.Cluster, node int) string {
	t.Helper()
	f := strings.Fields(run(t, c.NodeNS(node), "ip", "-br", "link", "show", "flannel.1"))
	if len(f) < 3 {
		t.Fatalf("flannel.1 on node %d: %v", node, f)
	}
	return f[2]
}

// kill -9 weftd during a 100 Hz ping between pods on two nodes and start it
// again: no ping lost, same subnet, same VTEP MAC.
func TestKillRestartLosesNoPing(t *testing.T) {
	c := up(t, cluster.Options{Lab: lab.Options{Nodes: 2}, Pods: 1})
	pods := c.Pods()
	envBefore, _ := c.SubnetEnv(1)
	macBefore := vtep(t, c, 1)
	res, _ := floodPing(t, pods[0].NS, pods[1].Addrs[0], 400)
	time.Sleep(time.Second)
	for i := range 2 {
		if err := c.KillWeftd(1, true); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		if err := c.StartWeftd(1); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitReady(context.Background(), 1); err != nil {
			t.Fatalf("restart %d: %v", i, err)
		}
	}
	r := <-res
	if r[0] != 400 || r[1] != r[0] {
		t.Errorf("ping during two kill -9 and restarts: %d sent, %d received; want 400 and no loss", r[0], r[1])
	}
	envAfter, _ := c.SubnetEnv(1)
	if envAfter.Subnet != envBefore.Subnet {
		t.Errorf("subnet changed from %s to %s", envBefore.Subnet, envAfter.Subnet)
	}
	if mac := vtep(t, c, 1); mac != macBefore {
		t.Errorf("VTEP MAC changed from %s to %s", macBefore, mac)
	}
	// SIGTERM leaves the data plane in place: pods still talk with the daemon down.
	if err := c.KillWeftd(1, false); err != nil {
		t.Fatal(err)
	}
	if _, err := lab.Ping(context.Background(), pods[0].NS, pods[1].Addrs[0]); err != nil {
		t.Errorf("ping with weftd stopped by SIGTERM: %v", err)
	}
}

// Deleting weft's route, neighbour, FDB entry or flannel.1 itself: pods ping
// again within 1 s.
func TestRepairRestoresTraffic(t *testing.T) {
	c := up(t, cluster.Options{Lab: lab.Options{Nodes: 2}, Pods: 1})
	pods := c.Pods()
	env2, _ := c.SubnetEnv(2)
	subnet := env2.Subnet.Masked()
	zero := subnet.Addr().String()
	mac := vtep(t, c, 2)
	ns := c.NodeNS(1)
	for _, cmd := range [][]string{
		{"ip", "route", "del", subnet.String()},
		{"ip", "neigh", "del", zero, "dev", "flannel.1"},
		{"bridge", "fdb", "del", mac, "dev", "flannel.1", "dst", "192.168.100.12", "self"},
		{"ip", "link", "del", "flannel.1"},
	} {
		assertRepaired(t, ns, cmd, pods[0].NS, pods[1].Addrs[0])
	}
}

// assertRepaired runs cmd in node namespace ns and checks that pod reaches
// dst again within 1 s (scaled by WEFT_TEST_TIME_FACTOR).
func assertRepaired(t *testing.T, ns string, cmd []string, pod string, dst netip.Addr) {
	t.Helper()
	run(t, ns, cmd...)
	limit := testenv.Scale(t, time.Second)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	var err error
	for ctx.Err() == nil {
		if _, err = lab.Ping(ctx, pod, dst); err == nil {
			break
		}
	}
	if err != nil {
		t.Errorf("after %q: pods do not ping within %v: %v", strings.Join(cmd, " "), limit, err)
		return
	}
	t.Logf("after %q: pods ping again after %v", strings.Join(cmd, " "), time.Since(start).Round(time.Millisecond))
}

// With --ip-masq, a pod's traffic to the outside world leaves with the node's
// address; pod-to-pod traffic keeps the pod's address.
func TestMasquerade(t *testing.T) {
	for _, nft := range []bool{false, true} {
		t.Run(map[bool]string{false: "iptables", true: "nftables"}[nft], func(t *testing.T) {
			conf := `{"Network":"10.244.0.0/16","EnableNFTables":` + map[bool]string{false: "false", true: "true"}[nft] + `}`
			c := up(t, cluster.Options{Lab: lab.Options{Nodes: 2, Outside: true}, Pods: 1, NetConf: conf, WeftdArgs: []string{"--ip-masq"}})
			pods := c.Pods()
			out, _ := c.Lab().Outside()
			node1, _ := c.Lab().Node(1)
			if got := peerAddr(t, pods[0].NS, out.NS, out.Addrs()[0]); got != node1.Addrs()[0] {
				t.Errorf("outside saw %s, want the node's %s", got, node1.Addrs()[0])
			}
			if got := peerAddr(t, pods[0].NS, pods[1].NS, pods[1].Addrs[0]); got != pods[0].Addrs[0] {
				t.Errorf("pod 2 saw %s, want pod 1's %s", got, pods[0].Addrs[0])
			}
			if nft {
				rules := run(t, c.NodeNS(1), "nft", "list", "table", "ip", "flannel-ipv4")
				if !strings.Contains(rules, "ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random") {
					t.Errorf("nftables rules:\n%s", rules)
				}
				return
			}
			rules := run(t, c.NodeNS(1), "iptables-save", "-t", "nat")
			if !strings.Contains(rules, "-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE --random-fully") {
				t.Errorf("masquerade rules:\n%s", rules)
			}
		})
	}
}

// peerAddr listens on TCP in serverNS at addr and reports the source address
// of a connection made from clientNS.
func peerAddr(t *testing.T, clientNS, serverNS string, addr netip.Addr) netip.Addr {
	t.Helper()
	ln := listenIn(t, serverNS, addr)
	got := make(chan netip.Addr, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			got <- netip.Addr{}
			return
		}
		defer conn.Close()
		got <- conn.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := lab.DialContext(ctx, clientNS, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("connect from %s to %s: %v", clientNS, ln.Addr(), err)
	}
	defer conn.Close()
	select {
	case a := <-got:
		return a
	case <-time.After(5 * time.Second):
		t.Fatalf("no connection reached %s", serverNS)
	}
	return netip.Addr{}
}
