//go:build linux

package tunnel

import (
	"bytes"
	"net/netip"
	"testing"
)

var (
	peerB = peer{key: "10.244.3.0-24", subnet: netip.MustParsePrefix("10.244.3.0/24"), endpoint: netip.MustParseAddrPort("192.168.100.12:8285")}
	ownA  = netip.MustParsePrefix("10.244.2.0/24")
)

func testTable() *table {
	t := newTable()
	t.setOwn(ownA, netip.MustParsePrefix("10.244.0.0/16"))
	t.set(peerB)
	return t
}

type capture struct{ writes [][]byte }

func (c *capture) write(b []byte) error { c.writes = append(c.writes, bytes.Clone(b)); return nil }

type sent struct {
	dst    netip.AddrPort
	b      []byte
	segLen int
}

type fakeSender struct{ sent []sent }

func (f *fakeSender) send(dst netip.AddrPort, b []byte, segLen int) error {
	f.sent = append(f.sent, sent{dst, bytes.Clone(b), segLen})
	return nil
}

func TestReceiveChecksSourceAndInnerAddresses(t *testing.T) {
	tun := &capture{}
	var st Stats
	r := &rxPath{peers: testTable(), stats: &st, co: newCoalescer(tun.write)}
	good := tcpPacket(podB, podA, 1, tcpFlagACK, []byte("x"))
	r.datagram(netip.MustParseAddrPort("192.168.100.99:8285"), good, 0) // not a peer
	r.datagram(netip.MustParseAddrPort("192.168.100.12:9999"), good, 0) // peer's address, wrong port
	spoof := tcpPacket(netip.MustParseAddr("10.244.9.1"), podA, 1, tcpFlagACK, []byte("x"))
	r.datagram(peerB.endpoint, spoof, 0)
	elsewhere := tcpPacket(podB, netip.MustParseAddr("10.244.7.1"), 1, tcpFlagACK, []byte("x"))
	r.datagram(peerB.endpoint, elsewhere, 0)
	r.datagram(peerB.endpoint, []byte{0x45, 0, 0}, 0)
	r.datagram(peerB.endpoint, nil, 0) // an ipip packet without an inner one
	_ = r.co.flush()
	if len(tun.writes) != 0 {
		t.Fatalf("%d packets reached the TUN", len(tun.writes))
	}
	if st.UnknownSource.Load() != 2 || st.Spoofed.Load() != 2 || st.Malformed.Load() != 2 {
		t.Fatalf("unknown %d spoofed %d malformed %d", st.UnknownSource.Load(), st.Spoofed.Load(), st.Malformed.Load())
	}
	r.datagram(netip.MustParseAddrPort("[::ffff:192.168.100.12]:8285"), good, 0)
	_ = r.co.flush()
	if len(tun.writes) != 1 || !bytes.Equal(tun.writes[0][vnetHdrLen:], good) {
		t.Fatalf("the peer's packet did not reach the TUN whole: %d writes", len(tun.writes))
	}
}

func TestSendToPeerAndUnreachable(t *testing.T) {
	tun, out := &capture{}, &fakeSender{}
	var st Stats
	tx := newTxPath(testTable(), &st, out, tun.write)
	p := tcpPacket(podA, podB, 1, tcpFlagACK, []byte("hello"))
	tx.packet(append(make([]byte, vnetHdrLen), p...))
	if len(out.sent) != 1 || out.sent[0].dst != peerB.endpoint || !bytes.Equal(out.sent[0].b, p) {
		t.Fatalf("sent %+v", out.sent)
	}
	lost := tcpPacket(podA, netip.MustParseAddr("10.244.99.1"), 1, tcpFlagACK, []byte("hello"))
	tx.packet(append(make([]byte, vnetHdrLen), lost...))
	if len(tun.writes) != 1 || st.NoRoute.Load() != 1 {
		t.Fatalf("%d ICMP writes, no-route %d", len(tun.writes), st.NoRoute.Load())
	}
	icmp := tun.writes[0][vnetHdrLen:]
	if icmp[9] != protoICMP || icmp[20] != 3 || icmp[21] != 1 || fold(checksum(icmp[20:], 0)) != 0xffff ||
		netip.AddrFrom4([4]byte(icmp[12:16])) != netip.MustParseAddr("10.244.0.0") ||
		netip.AddrFrom4([4]byte(icmp[16:20])) != podA || !bytes.Equal(icmp[28:], lost[:28]) {
		t.Fatalf("ICMP % x", icmp)
	}
}

func TestTableLookupAndUpdates(t *testing.T) {
	tb := testTable()
	other := peer{key: "k2", subnet: netip.MustParsePrefix("10.244.128.0/20"), endpoint: netip.MustParseAddrPort("192.168.100.13:8285")}
	tb.set(other)
	s := tb.load()
	if p := s.lookup(netip.MustParseAddr("10.244.3.200")); p == nil || p.key != peerB.key {
		t.Fatalf("lookup /24: %v", p)
	}
	if p := s.lookup(netip.MustParseAddr("10.244.140.1")); p == nil || p.key != "k2" {
		t.Fatalf("lookup /20: %v", p)
	}
	if tb.set(other) {
		t.Error("setting the same peer again reported a change")
	}
	if !tb.remove("k2") || tb.load().lookup(netip.MustParseAddr("10.244.140.1")) != nil {
		t.Error("removed peer still found")
	}
	if s.lookup(netip.MustParseAddr("10.244.140.1")) == nil {
		t.Error("an old snapshot changed under its reader")
	}
}

// A TCP packet larger than the MTU, as the kernel's GRO merges ipip packets
// before a raw socket reads them, reaches the TUN as one GSO packet whose
// segments fit the MTU, with the payload unchanged.
func TestReceiveResegmentsMergedPackets(t *testing.T) {
	tun := &capture{}
	var st Stats
	r := &rxPath{peers: testTable(), stats: &st, co: newCoalescer(tun.write), mtu: 1480}
	payload := make([]byte, 9000)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	merged := tcpPacket(podB, podA, 5000, tcpFlagACK, payload)
	r.datagram(peerB.endpoint, merged, 0)
	if err := r.co.flush(); err != nil {
		t.Fatal(err)
	}
	if len(tun.writes) != 1 {
		t.Fatalf("%d TUN writes, want one GSO packet", len(tun.writes))
	}
	var h vnetHdr
	h.decode(tun.writes[0])
	ip := tun.writes[0][vnetHdrLen:]
	if h.gsoType != gsoTCPv4 || int(h.gsoSize) != 1480-20-32 {
		t.Errorf("vnet header %+v, want TCPv4 GSO with segments of %d bytes", h, 1480-20-32)
	}
	if got := ip[20+32:]; !bytes.Equal(got, payload) {
		t.Errorf("payload changed: %d bytes, want %d", len(got), len(payload))
	}
	if n := st.RxPackets.Load(); n != 7 || st.Malformed.Load() != 0 {
		t.Errorf("rx %d packets, malformed %d; want 7 segments, none malformed", n, st.Malformed.Load())
	}
}
