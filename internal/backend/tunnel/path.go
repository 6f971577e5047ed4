//go:build linux

package tunnel

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"
	"time"
)

// Stats are the data path's counters.
type Stats struct {
	TxPackets, RxPackets atomic.Uint64
	// TxBytes and RxBytes count the inner packets' bytes (TxPackets counts
	// TUN reads, each up to 64 KiB; RxPackets inner packets).
	TxBytes, RxBytes atomic.Uint64
	// UnknownSource counts datagrams from an address and port that is no
	// peer's; Spoofed counts inner packets whose source is outside the
	// sending peer's subnet or whose destination is outside this node's.
	UnknownSource, Spoofed atomic.Uint64
	// Malformed counts datagrams or TUN reads that are not IPv4 packets.
	Malformed atomic.Uint64
	// NoRoute counts packets for an address no peer holds (each answered
	// with ICMP destination unreachable, rate-limited).
	NoRoute atomic.Uint64
	// SendErrors counts datagrams the socket refused.
	SendErrors atomic.Uint64
}

// DropsByReason returns the drop counters by reason, as metrics label them.
func (s *Stats) DropsByReason() map[string]uint64 {
	return map[string]uint64{"unknown-source": s.UnknownSource.Load(), "spoofed": s.Spoofed.Load(),
		"malformed": s.Malformed.Load(), "no-route": s.NoRoute.Load(), "send-error": s.SendErrors.Load()}
}

// rxPath turns received datagrams into packets for the TUN.
type rxPath struct {
	peers *table
	stats *Stats
	co    *coalescer
	// mtu is the device's: a TCP packet larger than it, which the kernel's
	// GRO merged before the raw ipip socket read it, is cut back to it (and
	// merged again, with a GSO header the TUN understands, by co). 0: none.
	mtu   int
	split []byte // segmentation scratch
}

// datagram handles one received message's inner packets from src; gso > 0
// is the size of each datagram the kernel coalesced (UDP GRO), the last may
// be shorter. The packets go to the coalescer; the caller flushes it once
// per batch of messages.
func (r *rxPath) datagram(src netip.AddrPort, b []byte, gso int) {
	snap := r.peers.load()
	if gso <= 0 || gso > len(b) {
		gso = len(b)
	}
	p := snap.bySrc[netip.AddrPortFrom(src.Addr().Unmap(), src.Port())]
	if p == nil {
		r.stats.UnknownSource.Add(uint64((len(b) + gso - 1) / max(gso, 1)))
		return
	}
	if len(b) == 0 {
		r.stats.Malformed.Add(1) // an outer packet without an inner one
		return
	}
	for off := 0; off < len(b); off += gso {
		r.packet(snap, p, b[off:min(off+gso, len(b))])
	}
}

func (r *rxPath) packet(snap *snapshot, p *peer, seg []byte) {
	_, total, err := ipv4Header(seg)
	if err != nil {
		r.stats.Malformed.Add(1)
		return
	}
	seg = seg[:total]
	src, dst := netip.AddrFrom4([4]byte(seg[12:16])), netip.AddrFrom4([4]byte(seg[16:20]))
	if !p.subnet.Contains(src) || !snap.own.Contains(dst) {
		r.stats.Spoofed.Add(1)
		return
	}
	if r.mtu > 0 && total > r.mtu && seg[9] == protoTCP {
		r.resegment(seg)
		return
	}
	r.stats.RxPackets.Add(1)
	r.stats.RxBytes.Add(uint64(len(seg)))
	if err := r.co.add(seg); err != nil {
		r.stats.SendErrors.Add(1)
	}
}

// resegment cuts a TCP packet larger than the MTU into MTU-sized segments
// with their own headers and checksums, for the coalescer.
func (r *rxPath) resegment(ip []byte) {
	ihl := int(ip[0]&0x0f) * 4
	if len(ip) < ihl+20 {
		r.stats.Malformed.Add(1)
		return
	}
	mss := r.mtu - ihl - int(ip[ihl+12]>>4)*4
	if len(r.split) == 0 {
		r.split = make([]byte, 2*maxIPLen)
	}
	n, segLen, err := segment(ip, vnetHdr{gsoType: gsoTCPv4, gsoSize: uint16(max(mss, 1))}, r.split)
	if err != nil || mss <= 0 {
		r.stats.Malformed.Add(1)
		return
	}
	for off := 0; off < n; off += segLen {
		r.stats.RxPackets.Add(1)
		r.stats.RxBytes.Add(uint64(min(off+segLen, n) - off))
		if err := r.co.add(r.split[off:min(off+segLen, n)]); err != nil {
			r.stats.SendErrors.Add(1)
		}
	}
}

// sender sends one buffer of back-to-back datagrams of segLen bytes each
// (the last may be shorter) to dst; segLen 0 means one datagram.
type sender interface {
	send(dst netip.AddrPort, b []byte, segLen int) error
}

// txPath turns packets read from the TUN into datagrams.
type txPath struct {
	peers  *table
	stats  *Stats
	out    sender
	tun    func([]byte) error // writes vnet header + packet (ICMP errors)
	seg    []byte             // segmentation scratch
	icmp   []byte
	bucket tokenBucket
}

func newTxPath(peers *table, stats *Stats, out sender, tun func([]byte) error) *txPath {
	return &txPath{peers: peers, stats: stats, out: out, tun: tun, seg: make([]byte, 2*maxIPLen),
		icmp: make([]byte, vnetHdrLen+20+8+60+8), bucket: tokenBucket{rate: 100, burst: 50}}
}

// packet handles one TUN read: vnet header + IPv4 packet.
func (t *txPath) packet(b []byte) {
	if len(b) < vnetHdrLen {
		t.stats.Malformed.Add(1)
		return
	}
	var h vnetHdr
	h.decode(b)
	ip := b[vnetHdrLen:]
	_, total, err := ipv4Header(ip)
	if err != nil {
		t.stats.Malformed.Add(1)
		return
	}
	ip = ip[:total]
	p := t.peers.load().lookup(netip.AddrFrom4([4]byte(ip[16:20])))
	if p == nil {
		t.stats.NoRoute.Add(1)
		t.unreachable(ip)
		return
	}
	buf, segLen := ip, 0
	switch h.gsoType {
	case gsoNone:
		if h.flags&vnetFlagNeedsCsum != 0 && completeChecksum(ip, h) != nil {
			t.stats.Malformed.Add(1)
			return
		}
	default:
		n, sl, err := segment(ip, h, t.seg)
		if err != nil {
			t.stats.Malformed.Add(1)
			return
		}
		buf, segLen = t.seg[:n], sl
	}
	if err := t.out.send(p.endpoint, buf, segLen); err != nil {
		t.stats.SendErrors.Add(1)
		return
	}
	t.stats.TxPackets.Add(1)
	t.stats.TxBytes.Add(uint64(len(ip)))
}

// unreachable answers a packet for an address no peer holds with ICMP
// destination unreachable (host unreachable), as a router would.
func (t *txPath) unreachable(ip []byte) {
	snap := t.peers.load()
	if !snap.own.IsValid() || !t.bucket.take(time.Now()) || !needsICMP(ip) {
		return
	}
	from := snap.icmpSrc
	if !from.IsValid() {
		from = netip.AddrFrom4([4]byte(ip[16:20]))
	}
	n := buildUnreachable(t.icmp[vnetHdrLen:], from, ip)
	clear(t.icmp[:vnetHdrLen])
	_ = t.tun(t.icmp[:vnetHdrLen+n])
}

// needsICMP is false for packets that must not trigger an ICMP error:
// fragments other than the first, and ICMP errors themselves.
func needsICMP(ip []byte) bool {
	if binary.BigEndian.Uint16(ip[6:])&0x1fff != 0 {
		return false
	}
	ihl := int(ip[0]&0x0f) * 4
	if ip[9] == protoICMP && len(ip) > ihl {
		switch ip[ihl] {
		case 0, 8, 13, 14: // echo reply/request, timestamp: queries
		default:
			return false
		}
	}
	return true
}

// buildUnreachable writes an IPv4 ICMP type 3 code 1 for orig into b and
// returns its length.
func buildUnreachable(b []byte, from netip.Addr, orig []byte) int {
	ihl := int(orig[0]&0x0f) * 4
	quote := min(len(orig), ihl+8)
	n := 20 + 8 + quote
	clear(b[:28])
	b[0], b[8], b[9] = 0x45, 64, protoICMP
	binary.BigEndian.PutUint16(b[2:], uint16(n))
	f := from.As4()
	copy(b[12:16], f[:])
	copy(b[16:20], orig[12:16])
	setIPv4Checksum(b, 20)
	b[20], b[21] = 3, 1
	copy(b[28:], orig[:quote])
	binary.BigEndian.PutUint16(b[22:], ^fold(checksum(b[20:n], 0)))
	return n
}

// tokenBucket limits ICMP errors (one per worker; not safe for concurrent
// use).
type tokenBucket struct {
	rate, burst float64
	tokens      float64
	last        time.Time
}

func (b *tokenBucket) take(now time.Time) bool {
	if b.last.IsZero() {
		b.tokens = b.burst
	} else {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
