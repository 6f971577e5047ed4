//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/cluster"
	"github.com/weft-net/weft/internal/testenv"
)

// A kernel ipip node in a weft ipip cluster (this machine's kernel has no
// ipip module, so weft's nodes run the userspace path): its lease is written
// into etcd as flannel's ipip backend writes it, and the node is emulated at
// the wire in the outside namespace, behind the lab's router: a raw socket
// for IP protocol 4 receives what weft sends it, and every ICMP echo request
// inside is answered with an echo reply inside an outer IPv4 header built
// byte by byte as a kernel ipip device builds it (protocol 4, DF, TTL 64, no
// extra header). Before that lease exists the same namespace is a stranger,
// and after it, a peer that spoofs another node's pods: both kinds of
// packet are dropped and counted, and the pod never sees them.
func TestIPIPKernelShapedPeer(t *testing.T) {
	c := up(t, cluster.Options{Lab: lab.Options{Nodes: 2, Outside: true}, Backend: "ipip", Pods: 1})
	pods := c.Pods()
	out, _ := c.Lab().Outside()
	node1, _ := c.Lab().Node(1)
	peerIP, node1IP := out.Addrs()[0], node1.Addrs()[0]
	subnet := freeSubnet(c, 2)
	target := subnet.Addr().Next().Next() // a "pod" of the kernel ipip node
	var recv net.PacketConn
	var send int
	if err := lab.Do(out.NS, func() (err error) {
		if recv, err = net.ListenPacket("ip4:4", peerIP.String()); err != nil {
			return err
		}
		send, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW) // we write the outer header
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer recv.Close()
	defer syscall.Close(send)
	sendOuter := func(inner []byte) {
		pkt := outerIPIP(peerIP, node1IP, inner)
		if err := syscall.Sendto(send, pkt, 0, &syscall.SockaddrInet4{Addr: node1IP.As4()}); err != nil {
			t.Fatalf("send an ipip packet: %v", err)
		}
	}

	// The pod listens on UDP 7777; nothing crafted may reach it.
	pc := listenUDPIn(t, pods[0].NS, pods[0].Addrs[0], 7777)
	const crafted = 50
	expectDrops := func(what string, which func(unknown, spoofed int) int) {
		t.Helper()
		_ = pc.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
		if n, from, err := pc.ReadFrom(make([]byte, 100)); err == nil {
			t.Errorf("%s: the pod received %d bytes from %s", what, n, from)
		}
		deadline := time.Now().Add(5 * time.Second)
		for which(lastDrops(t, c, 1)) < crafted || which(ipipDrops(t, c)) < crafted {
			if time.Now().After(deadline) {
				u, s := lastDrops(t, c, 1)
				t.Fatalf("%s: drop counters unknown-source=%d spoofed=%d after %d crafted packets", what, u, s, crafted)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	for range crafted { // a stranger, claiming node 2's pod as the source
		sendOuter(craftUDP(pods[1].Addrs[0], pods[0].Addrs[0], 7777, []byte("intruder")))
	}
	expectDrops("stranger", func(u, _ int) int { return u })

	type packet struct {
		from net.Addr
		b    []byte
	}
	got := make(chan packet, 64)
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := recv.ReadFrom(buf) // the payload after the outer header
			if err != nil {
				close(got)
				return
			}
			b := bytes.Clone(buf[:n])
			if reply := echoReply(b); reply != nil {
				sendOuter(reply)
			}
			select {
			case got <- packet{from, b}:
			default:
			}
		}
	}()
	value := `{"PublicIP":"` + peerIP.String() + `","PublicIPv6":null,"BackendType":"ipip"}` // flannel's ipip lease
	key := cluster.Prefix + "/subnets/" + strings.ReplaceAll(subnet.String(), "/", "-")
	if err := c.PutLeased(context.Background(), [][2]string{{key, value}}, time.Hour); err != nil {
		t.Fatal(err)
	}
	const pattern = "5745465449504950" // "WEFTIPIP"
	deadline := time.Now().Add(10 * time.Second)
	for {
		o, err := lab.Exec(context.Background(), pods[0].NS, "ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", "-p", pattern, target.String())
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			b, _ := lab.Exec(context.Background(), c.NodeNS(1), "cat", c.LogFile(1))
			t.Fatalf("pod on weft node 1 cannot reach the kernel ipip node's pod %s:\n%s\nweftd log:\n%s", target, o, b)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if r := routeTo(t, c, 1, 1); r == "" {
		t.Fatal("node 1 has no route to its own subnet")
	}
	if r := strings.TrimSpace(run(t, c.NodeNS(1), "ip", "route", "show", subnet.String())); r != subnet.String()+" via "+peerIP.String()+" dev flannel.ipip proto 87 onlink" {
		t.Errorf("route to the kernel ipip node: %q", r)
	}
	select {
	case p := <-got:
		if p.from.String() != node1IP.String() {
			t.Errorf("ipip packet from %s, want node 1's public address %s", p.from, node1IP)
		}
		// The payload is the pod's packet as the pod sent it, forwarded
		// once (TTL 63): from node 1's subnet (the pod, or flannel.ipip's
		// address when the bridge plugin masquerades), with the pattern.
		src, dst, proto := ipv4Header(p.b)
		env1, _ := c.SubnetEnv(1)
		if !env1.Subnet.Masked().Contains(src) || dst != target || proto != 1 || p.b[8] != 63 {
			t.Errorf("payload is %s -> %s proto %d ttl %d, want ICMP from node 1's subnet %s to %s, ttl 63", src, dst, proto,
				p.b[8], env1.Subnet.Masked(), target)
		}
		if !bytes.Contains(p.b[28:], []byte("WEFTIPIP")) {
			t.Errorf("the echo request's payload lost the pod's pattern: %x", p.b[28:])
		}
	default:
		t.Error("the kernel ipip node received no packet")
	}

	for range crafted { // the peer, claiming node 2's pod as the source
		sendOuter(craftUDP(pods[1].Addrs[0], pods[0].Addrs[0], 7777, []byte("spoofer")))
	}
	expectDrops("spoofing peer", func(_, s int) int { return s })
	assertMatrix(t, c)
}

// ipipDrops reads node 1's ipip drop counters from its /metrics.
func ipipDrops(t *testing.T, c *cluster.Cluster) (unknown, spoofed int) {
	m := scrapeNode(t, c, 1)
	return int(m.Value("weft_datapath_drops_total", map[string]string{"encap": "ipip", "reason": "unknown-source"})),
		int(m.Value("weft_datapath_drops_total", map[string]string{"encap": "ipip", "reason": "spoofed"}))
}

// outerIPIP wraps inner in the outer IPv4 header a kernel ipip device
// writes: version 4, IHL 5, TOS 0, DF, TTL 64, protocol 4.
func outerIPIP(src, dst netip.Addr, inner []byte) []byte {
	b := make([]byte, 20+len(inner))
	b[0], b[8], b[9] = 0x45, 64, 4
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint16(b[6:], 0x4000) // DF
	s, d := src.As4(), dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint16(b[10:], checksum(b[:20]))
	copy(b[20:], inner)
	return b
}

// kill -9 under a 100 Hz ping: the TUN, its address and routes stay, and
// the next weftd resumes from the peer snapshot (see TestUDPKillRestart).
func TestIPIPKillRestart(t *testing.T) { killRestart(t, "ipip", "flannel.ipip") }

// A peer's lease deleted: its route goes from node 1 within a second (and
// its packets would count as a stranger's), while pods of the other nodes
// keep talking; it rejoins with a new lease.
func TestIPIPPeerChurn(t *testing.T) {
	peerChurn(t, "ipip", func(c *cluster.Cluster, node3Pod cluster.Pod) {
		dst := netip.PrefixFrom(node3Pod.Addrs[0], 24).Masked().String()
		deadline := time.Now().Add(time.Second)
		for {
			r := strings.TrimSpace(run(t, c.NodeNS(1), "ip", "route", "show", dst))
			if r == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("node 1 still routes the deleted lease's subnet: %q", r)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// TCP through the userspace ipip path, both ways, verified byte for byte:
// TSO reads cut into packets, sent in sendmmsg batches, merged back on
// receive.
func TestIPIPTransferVerified(t *testing.T) {
	c := up(t, cluster.Options{Lab: lab.Options{Nodes: 2}, Backend: "ipip", Pods: 1})
	pods := c.Pods()
	transfer(t, pods[0].NS, pods[1].NS, pods[1].Addrs[0], 32<<20)
	transfer(t, pods[1].NS, pods[0].NS, pods[0].Addrs[0], 32<<20)
}

// The kernel path, where the kernel has an ipip module: flannel.ipip is a
// kernel ipip device with local = the public address, and pods ping across
// (a node behind the router too); with DirectRouting the peer on the same
// subnet is routed on eth0, the far one on flannel.ipip.
func TestIPIPKernelPath(t *testing.T) {
	needIPIPModule(t)
	for _, dr := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "directrouting"}[dr], func(t *testing.T) {
			c := up(t, cluster.Options{Lab: lab.Options{Nodes: 3, Far: []int{3}}, Backend: "ipip", DirectRouting: dr, Pods: 1,
				WeftdArgs: []string{"--ipip-path=kernel"}})
			node1, _ := c.Lab().Node(1)
			link := run(t, c.NodeNS(1), "ip", "-d", "link", "show", "flannel.ipip")
			if !strings.Contains(link, "ipip ") || !strings.Contains(link, "local "+node1.Addrs()[0].String()) ||
				!strings.Contains(link, "mtu 1480") {
				t.Errorf("flannel.ipip: %s", link)
			}
			env, _ := c.SubnetEnv(1)
			if env.MTU != 1480 {
				t.Errorf("subnet.env MTU %d, want 1480", env.MTU)
			}
			via := func(node int) string { n, _ := c.Lab().Node(node); return "via " + n.Addrs()[0].String() }
			near, far := routeTo(t, c, 1, 2), routeTo(t, c, 1, 3)
			if wantNear := via(2) + " dev flannel.ipip"; dr {
				if !strings.Contains(near, via(2)+" dev eth0") {
					t.Errorf("DirectRouting: same-subnet peer route %q, want it %s dev eth0", near, via(2))
				}
			} else if !strings.Contains(near, wantNear) || !strings.HasSuffix(near, "onlink") {
				t.Errorf("near peer route %q, want %s onlink", near, wantNear)
			}
			if !strings.Contains(far, via(3)+" dev flannel.ipip") || !strings.HasSuffix(far, "onlink") {
				t.Errorf("far peer route %q, want %s dev flannel.ipip onlink", far, via(3))
			}
			assertMatrix(t, c)
		})
	}
}

// needIPIPModule skips t unless the kernel can make an ipip device (here
// it cannot; the kernel tier's kernels can).
func needIPIPModule(t *testing.T) {
	t.Helper()
	needRoot(t)
	if err := kernelCanMake(t, "ipip", "local", "192.0.2.1"); err != nil {
		t.Skipf("the kernel has no ipip module (%v): the kernel path is tested where it has one (make test-kernels); "+
			"here the userspace path's tests run (TestIPIPKernelShapedPeer talks to a kernel-shaped ipip node)", err)
	}
}

// kernelCanMake creates a device of kind, with args, in a namespace of its
// own (testenv.Namespace: named uniquely for this run, removed after). An
// ipip device needs a local address: one without is the module's own tunl0
// (any to any), which exists already in every namespace once the module is
// loaded ("File exists").
func kernelCanMake(t *testing.T, kind string, args ...string) error {
	ns := testenv.Namespace(t, "wprobe-")
	argv := append([]string{"ip", "link", "add", "probe", "type", kind}, args...)
	if _, err := lab.Exec(context.Background(), ns, argv...); err != nil {
		return err
	}
	return nil
}
