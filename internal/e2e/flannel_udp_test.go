//go:build linux

package e2e

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/cluster"
)

// A flannel udp node in a weft cluster: its lease is written into etcd by
// the test exactly as flannel v0.28 writes it (no BackendType), and the node
// itself is emulated at the wire in the outside namespace: a socket on port
// 8285 that answers every ICMP echo request it receives, inside a datagram,
// with an echo reply inside a datagram, as flannel's udp data path with a
// pod behind it would. A weft pod pings an address in the flannel node's
// subnet and gets answers; the request arrives as one whole IPv4 packet in
// the datagram's payload, from the weft node's PublicIP and port 8285.
func TestUDPFlannelShapedPeer(t *testing.T) {
	c := up(t, cluster.Options{Lab: lab.Options{Nodes: 2, Outside: true}, Backend: "udp", Pods: 1})
	pods := c.Pods()
	out, _ := c.Lab().Outside()
	node1, _ := c.Lab().Node(1)
	flannelIP := out.Addrs()[0]
	subnet := freeSubnet(c, 2)
	target := subnet.Addr().Next().Next() // a "pod" of the flannel node
	var sock net.PacketConn
	if err := lab.Do(out.NS, func() (err error) {
		sock, err = net.ListenPacket("udp4", net.JoinHostPort(flannelIP.String(), "8285"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	type datagram struct {
		from net.Addr
		b    []byte
	}
	got := make(chan datagram, 64)
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := sock.ReadFrom(buf)
			if err != nil {
				close(got)
				return
			}
			b := bytes.Clone(buf[:n])
			if reply := echoReply(b); reply != nil {
				_, _ = sock.WriteTo(reply, from)
			}
			select {
			case got <- datagram{from, b}:
			default:
			}
		}
	}()
	value := `{"PublicIP":"` + flannelIP.String() + `","PublicIPv6":null}` // flannel v0.28's udp lease, byte for byte
	key := cluster.Prefix + "/subnets/" + strings.ReplaceAll(subnet.String(), "/", "-")
	if err := c.PutLeased(context.Background(), [][2]string{{key, value}}, time.Hour); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	var lastOut string
	for {
		o, err := lab.Exec(context.Background(), pods[0].NS, "ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", target.String())
		if err == nil {
			break
		}
		lastOut = o
		if time.Now().After(deadline) {
			b, _ := lab.Exec(context.Background(), c.NodeNS(1), "cat", c.LogFile(1))
			t.Fatalf("pod on weft node 1 cannot reach the flannel node's pod %s:\n%s\nweftd log:\n%s", target, lastOut, b)
		}
		time.Sleep(300 * time.Millisecond)
	}
	select {
	case d := <-got:
		if want := net.JoinHostPort(node1.Addrs()[0].String(), "8285"); d.from.String() != want {
			t.Errorf("datagram from %s, want %s", d.from, want)
		}
		// The source is in node 1's subnet: the pod's address, or flannel0's
		// when the bridge plugin masquerades (ipMasq without --ip-masq, as
		// with flannel).
		src, dst, proto := ipv4Header(d.b)
		env1, _ := c.SubnetEnv(1)
		if !env1.Subnet.Masked().Contains(src) || dst != target || proto != 1 {
			t.Errorf("payload is %s -> %s proto %d, want an ICMP packet from node 1's subnet %s to %s", src, dst, proto,
				env1.Subnet.Masked(), target)
		}
	default:
		t.Error("the flannel node received no datagram")
	}
	b, _ := lab.Exec(context.Background(), c.NodeNS(1), "cat", c.LogFile(1))
	if strings.Contains(string(b), "ignoring peer lease") {
		t.Errorf("weftd ignored a lease:\n%s", b)
	}
}

// ipv4Header returns an IPv4 packet's addresses and protocol.
func ipv4Header(b []byte) (src, dst netip.Addr, proto int) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return netip.Addr{}, netip.Addr{}, -1
	}
	return netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20])), int(b[9])
}

// echoReply turns an IPv4 ICMP echo request into its reply (addresses
// swapped, type 0, both checksums recomputed), or returns nil.
func echoReply(req []byte) []byte {
	if len(req) < 28 || req[0]>>4 != 4 || req[9] != 1 {
		return nil
	}
	hl := int(req[0]&0x0f) * 4
	if len(req) < hl+8 || req[hl] != 8 {
		return nil
	}
	b := bytes.Clone(req)
	copy(b[12:16], req[16:20])
	copy(b[16:20], req[12:16])
	b[8] = 64
	b[hl] = 0
	b[10], b[11] = 0, 0
	b[hl+2], b[hl+3] = 0, 0
	put := func(off int, sum uint16) { b[off], b[off+1] = byte(sum>>8), byte(sum) }
	put(10, checksum(b[:hl]))
	put(hl+2, checksum(b[hl:]))
	return b
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
