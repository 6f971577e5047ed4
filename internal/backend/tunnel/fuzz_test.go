//go:build linux

package tunnel

import (
	"net"
	"net/netip"
	"testing"

	"golang.org/x/net/ipv4"
)

// FuzzReceive feeds arbitrary (malformed, truncated, oversized, coalesced)
// datagrams to the receive path from a peer and from a stranger, and
// arbitrary TUN reads to the send path: neither may panic, and whatever
// reaches the TUN must be an IPv4 packet from the peer's subnet to ours.
func FuzzReceive(f *testing.F) {
	f.Add(tcpPacket(podB, podA, 1, tcpFlagACK, []byte("hello")), 0, true)
	two := append(tcpPacket(podB, podA, 1, tcpFlagACK, make([]byte, 10)), tcpPacket(podB, podA, 11, tcpFlagACK, make([]byte, 10))...)
	f.Add(two, 62, true)
	f.Add([]byte{0x45, 0, 0, 20}, 0, false)
	f.Add(make([]byte, 70000), 1400, true)
	f.Fuzz(func(t *testing.T, b []byte, gso int, fromPeer bool) {
		var st Stats
		tb := testTable()
		check := func(w []byte) error {
			if len(w) < vnetHdrLen+20 {
				t.Fatalf("short TUN write %d", len(w))
			}
			ip := w[vnetHdrLen:]
			src, dst := netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
			if !peerB.subnet.Contains(src) || !ownA.Contains(dst) {
				t.Fatalf("%s -> %s reached the TUN", src, dst)
			}
			return nil
		}
		r := &rxPath{peers: tb, stats: &st, co: newCoalescer(check)}
		from := peerB.endpoint
		if !fromPeer {
			from = netip.MustParseAddrPort("192.168.100.99:8285")
		}
		r.datagram(from, b, gso)
		_ = r.co.flush()
		tx := newTxPath(tb, &st, &fakeSender{}, func([]byte) error { return nil })
		for _, h := range []vnetHdr{{}, {gsoType: gsoTCPv4, gsoSize: uint16(gso)}, {gsoType: gsoUDPL4, gsoSize: uint16(gso)},
			{flags: vnetFlagNeedsCsum, csumStart: uint16(gso), csumOffset: 16}} {
			buf := make([]byte, vnetHdrLen+len(b))
			h.encode(buf)
			copy(buf[vnetHdrLen:], b)
			tx.packet(buf)
		}
	})
}

// FuzzIPIPReceive feeds arbitrary packets, as a raw socket for protocol 4
// delivers them (outer header included), to the ipip receive path from a
// peer and from a stranger: nothing may panic, and whatever reaches the TUN
// must be an IPv4 packet from the peer's subnet to ours.
func FuzzIPIPReceive(f *testing.F) {
	inner := tcpPacket(podB, podA, 1, tcpFlagACK, []byte("hello"))
	outer := append([]byte{0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, protoIPIP, 0, 0, 192, 168, 100, 12, 192, 168, 100, 11}, inner...)
	f.Add(outer, true)
	f.Add(outer[:24], true)
	f.Add([]byte{0x46, 0, 0, 0, 0, 0, 0, 0, 64, protoIPIP, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}, true)
	f.Add(append([]byte{0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17}, make([]byte, 30)...), false)
	f.Fuzz(func(t *testing.T, b []byte, fromPeer bool) {
		var st Stats
		tb := newTable()
		tb.setOwn(ownA, netip.MustParsePrefix("10.244.0.0/16"))
		peer := peerB
		peer.endpoint = IPIP().Endpoint(peerB.endpoint.Addr())
		tb.set(peer)
		r := &rxPath{peers: tb, stats: &st, co: newCoalescer(func(w []byte) error {
			ip := w[vnetHdrLen:]
			src, dst := netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
			if !peerB.subnet.Contains(src) || !ownA.Contains(dst) {
				t.Fatalf("%s -> %s reached the TUN", src, dst)
			}
			return nil
		})}
		m := ipv4.Message{Buffers: [][]byte{b}, N: len(b), Addr: &net.IPAddr{IP: net.IPv4(192, 168, 100, 12)}}
		if !fromPeer {
			m.Addr = &net.IPAddr{IP: net.IPv4(192, 168, 100, 99)}
		}
		src, pkts, size := (&ipipConn{}).message(&m)
		r.datagram(src, pkts, size)
		_ = r.co.flush()
	})
}
