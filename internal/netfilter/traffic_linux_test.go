package netfilter_test

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/netfilter/netfiltertest"
)

// topology is pod (10.244.1.2) - node - outside (192.168.77.2), plus a
// second pod namespace pod2 (10.244.2.2) routed through the node, standing
// for another node's subnet of the cluster network.
type topology struct {
	pod, node, outside, pod2 string
}

func newTopology(t *testing.T) topology {
	t.Helper()
	tp := topology{netfiltertest.NewNS(t), netfiltertest.NewNS(t), netfiltertest.NewNS(t), netfiltertest.NewNS(t)}
	ip := func(ns string, args ...string) {
		t.Helper()
		netfiltertest.MustRun(t, "ip", append([]string{"-n", ns}, args...)...)
	}
	for _, l := range []struct{ dev, peerNS, nodeAddr, peerAddr string }{
		{"to-pod", tp.pod, "10.244.1.1/24", "10.244.1.2/24"},
		{"to-out", tp.outside, "192.168.77.1/24", "192.168.77.2/24"},
		{"to-pod2", tp.pod2, "10.244.2.1/24", "10.244.2.2/24"},
	} {
		ip(tp.node, "link", "add", l.dev, "type", "veth", "peer", "name", "eth0", "netns", l.peerNS)
		ip(tp.node, "addr", "add", l.nodeAddr, "dev", l.dev)
		ip(tp.node, "link", "set", l.dev, "up")
		ip(l.peerNS, "addr", "add", l.peerAddr, "dev", "eth0")
		ip(l.peerNS, "link", "set", "eth0", "up")
	}
	ip(tp.pod, "route", "add", "default", "via", "10.244.1.1")
	ip(tp.pod2, "route", "add", "default", "via", "10.244.2.1")
	// outside has no route to the cluster network: only masqueraded
	// traffic could be answered, as on a real external host.
	err := netfiltertest.InNS(tp.node, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	})
	if err != nil {
		t.Fatalf("enable forwarding in node: %v", err)
	}
	return tp
}

// listenUDP opens a UDP socket on addr inside ns.
func listenUDP(t *testing.T, ns, addr string) *net.UDPConn {
	t.Helper()
	var conn *net.UDPConn
	err := netfiltertest.InNS(ns, func() error {
		var err error
		conn, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
		return err
	})
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// sourceSeen sends a datagram from ns to the server and returns the source
// address the server received it from.
func sourceSeen(t *testing.T, ns string, srv *net.UDPConn) netip.Addr {
	t.Helper()
	msg := fmt.Sprintf("hello %d", time.Now().UnixNano())
	err := netfiltertest.InNS(ns, func() error {
		c, err := net.Dial("udp", srv.LocalAddr().String())
		if err != nil {
			return err
		}
		defer c.Close()
		for range 3 { // the first may wait for ARP; three are plenty
			if _, err := c.Write([]byte(msg)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("send from %s: %v", ns, err)
	}
	buf := make([]byte, 64)
	for {
		if err := srv.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		n, from, err := srv.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("no datagram from %s at %s: %v", ns, srv.LocalAddr(), err)
		}
		if string(buf[:n]) == msg {
			return from.Addr().Unmap()
		}
	}
}

// TestTrafficMasquerade sends real traffic through a node namespace with
// weft's rules: pod to outside leaves with the node's address, pod to
// another cluster subnet keeps the pod's address.
func TestTrafficMasquerade(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			netfiltertest.RequireRoot(t, m.bins...)
			tp := newTopology(t)
			outside := listenUDP(t, tp.outside, "192.168.77.2:9999")
			pod2 := listenUDP(t, tp.pod2, "10.244.2.2:9999")
			podAddr, nodeOut := netip.MustParseAddr("10.244.1.2"), netip.MustParseAddr("192.168.77.1")

			if got := sourceSeen(t, tp.pod, outside); got != podAddr {
				t.Fatalf("without rules outside sees %s, want %s (no NAT yet)", got, podAddr)
			}
			e := newEnvIn(t, m, time.Hour, tp.node)
			e.set(t, testCfg())

			if got := sourceSeen(t, tp.pod, outside); got != nodeOut {
				t.Errorf("pod -> outside arrives from %s, want the node's %s", got, nodeOut)
			}
			if got := sourceSeen(t, tp.pod, pod2); got != podAddr {
				t.Errorf("pod -> other cluster subnet arrives from %s, want the pod's %s", got, podAddr)
			}
		})
	}
}
