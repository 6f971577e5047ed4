//go:build linux

package tunnel

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
)

var (
	podA = netip.MustParseAddr("10.244.2.5")
	podB = netip.MustParseAddr("10.244.3.9")
)

// tcpPacket builds an IPv4 TCP packet with a valid checksum.
func tcpPacket(src, dst netip.Addr, seq uint32, flags byte, payload []byte) []byte {
	p := make([]byte, 20+32+len(payload))
	p[0], p[8], p[9] = 0x45, 64, protoTCP
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	binary.BigEndian.PutUint16(p[6:], 0x4000)
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	setIPv4Checksum(p, 20)
	t := p[20:]
	binary.BigEndian.PutUint16(t[0:], 40000)
	binary.BigEndian.PutUint16(t[2:], 5201)
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], 77)
	t[12], t[13] = 8<<4, flags
	binary.BigEndian.PutUint16(t[14:], 500)
	t[20], t[21], t[22] = 1, 1, 8 // NOP NOP timestamp
	copy(t[32:], payload)
	binary.BigEndian.PutUint16(t[16:], ^fold(checksum(t, pseudoSum(p, protoTCP, len(t)))))
	return p
}

func validL4(t *testing.T, p []byte) {
	t.Helper()
	ihl := int(p[0]&0x0f) * 4
	if fold(checksum(p[:ihl], 0)) != 0xffff {
		t.Fatalf("bad IPv4 header checksum")
	}
	if got := fold(checksum(p[ihl:], pseudoSum(p, p[9], len(p)-ihl))); got != 0xffff {
		t.Fatalf("bad L4 checksum %#x", got)
	}
}

func TestSegmentThenCoalesceRestoresTheStream(t *testing.T) {
	payload := make([]byte, 20000)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	big := tcpPacket(podA, podB, 1000, tcpFlagACK|tcpFlagPSH, payload)
	// As the kernel hands it over with TSO: partial checksum, gso_size=MSS.
	h := vnetHdr{flags: vnetFlagNeedsCsum, gsoType: gsoTCPv4, hdrLen: 52, gsoSize: 1400, csumStart: 20, csumOffset: 16}
	out := make([]byte, 2*maxIPLen)
	n, segLen, err := segment(big, h, out)
	if err != nil {
		t.Fatal(err)
	}
	if segLen != 52+1400 {
		t.Fatalf("segLen %d", segLen)
	}
	var merged [][]byte
	co := newCoalescer(func(b []byte) error { merged = append(merged, bytes.Clone(b)); return nil })
	segs := 0
	for off := 0; off < n; off += segLen {
		seg := out[off:min(off+segLen, n)]
		validL4(t, seg)
		flags := seg[20+13]
		if last := off+segLen >= n; (flags&tcpFlagPSH != 0) != last {
			t.Fatalf("segment %d: PSH %v, last %v", segs, flags&tcpFlagPSH != 0, last)
		}
		if err := co.add(seg); err != nil {
			t.Fatal(err)
		}
		segs++
	}
	if err := co.flush(); err != nil {
		t.Fatal(err)
	}
	if segs != 15 || len(merged) != 1 {
		t.Fatalf("%d segments merged into %d writes; want 15 into 1", segs, len(merged))
	}
	var mh vnetHdr
	mh.decode(merged[0])
	got := merged[0][vnetHdrLen:]
	if mh.gsoType != gsoTCPv4 || mh.gsoSize != 1400 || mh.csumStart != 20 || mh.csumOffset != 16 || mh.hdrLen != 52 {
		t.Fatalf("merged header %+v", mh)
	}
	if !bytes.Equal(got[52:], payload) || binary.BigEndian.Uint16(got[2:]) != uint16(len(big)) {
		t.Fatal("merged packet differs from the original")
	}
	if got[20+13] != tcpFlagACK|tcpFlagPSH {
		t.Fatalf("merged flags %#x", got[20+13])
	}
}

func TestCoalescerKeepsGapsAndFlowsApart(t *testing.T) {
	var writes [][]byte
	co := newCoalescer(func(b []byte) error { writes = append(writes, bytes.Clone(b)); return nil })
	pl := make([]byte, 100)
	for _, p := range [][]byte{
		tcpPacket(podA, podB, 0, tcpFlagACK, pl),
		tcpPacket(podA, podB, 100, tcpFlagACK, pl), // merges
		tcpPacket(podA, podB, 300, tcpFlagACK, pl), // gap
		tcpPacket(podB, podA, 400, tcpFlagACK, pl), // other flow
		tcpPacket(podB, podA, 500, tcpFlagSYN, pl), // flags
	} {
		if err := co.add(p); err != nil {
			t.Fatal(err)
		}
	}
	_ = co.flush()
	if len(writes) != 4 {
		t.Fatalf("%d writes, want 4", len(writes))
	}
	for i, w := range writes[1:] {
		if w[1] != gsoNone {
			t.Errorf("write %d is GSO", i+1)
		}
		validL4(t, w[vnetHdrLen:])
	}
}

func TestCompleteChecksum(t *testing.T) {
	p := tcpPacket(podA, podB, 1, tcpFlagACK, []byte("hello world"))
	want := binary.BigEndian.Uint16(p[36:])
	binary.BigEndian.PutUint16(p[36:], fold(pseudoSum(p, protoTCP, len(p)-20)))
	if err := completeChecksum(p, vnetHdr{csumStart: 20, csumOffset: 16}); err != nil {
		t.Fatal(err)
	}
	if got := binary.BigEndian.Uint16(p[36:]); got != want {
		t.Fatalf("checksum %#x, want %#x", got, want)
	}
}

func TestSegmentUDP(t *testing.T) {
	payload := make([]byte, 3000)
	p := make([]byte, 28+len(payload))
	p[0], p[8], p[9] = 0x45, 64, protoUDP
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	copy(p[12:], podA.AsSlice())
	copy(p[16:], podB.AsSlice())
	copy(p[28:], payload)
	out := make([]byte, 2*maxIPLen)
	n, segLen, err := segment(p, vnetHdr{gsoType: gsoUDPL4, gsoSize: 1400}, out)
	if err != nil || segLen != 1428 || n != 3*28+3000 {
		t.Fatalf("n %d segLen %d err %v", n, segLen, err)
	}
	for off := 0; off < n; off += segLen {
		validL4(t, out[off:min(off+segLen, n)])
	}
}

// checksumRef is RFC 1071's sum of 16-bit big-endian words.
func checksumRef(b []byte, initial uint64) uint16 {
	ac := initial
	for ; len(b) >= 2; b = b[2:] {
		ac += uint64(b[0])<<8 | uint64(b[1])
	}
	if len(b) == 1 {
		ac += uint64(b[0]) << 8
	}
	return fold(ac)
}

// The 64-bit checksum folds to RFC 1071's 16-bit sum for every length and
// alignment, all-ones data (every carry) and all-zero data included.
func TestChecksumMatchesRFC1071(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 9000)
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	ones := bytes.Repeat([]byte{0xff}, 9000)
	zeros := make([]byte, 9000)
	for _, data := range [][]byte{buf, ones, zeros} {
		for n := 0; n < 300; n++ {
			for _, off := range []int{0, 1, 3, 7} {
				for _, initial := range []uint64{0, 0xffff, 0x1fffe, 0xffffffffff} {
					b := data[off : off+n]
					if got, want := fold(checksum(b, initial)), checksumRef(b, initial); got != want {
						t.Fatalf("len %d off %d initial %#x: %#04x, want %#04x", n, off, initial, got, want)
					}
				}
			}
		}
		b := data[:8999]
		if got, want := fold(checksum(b, 7)), checksumRef(b, 7); got != want {
			t.Fatalf("len 8999: %#04x, want %#04x", got, want)
		}
	}
}

func BenchmarkChecksum1448(b *testing.B) {
	buf := make([]byte, 1448)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		_ = fold(checksum(buf, 0))
	}
}
