//go:build linux

package tunnel

import (
	"encoding/binary"
	"errors"
	"math/bits"
)

// The virtio-net header that prefixes every packet on a TUN opened with
// IFF_VNET_HDR (struct virtio_net_hdr, host byte order, 10 bytes).
const (
	vnetHdrLen = 10

	vnetFlagNeedsCsum = 1

	gsoNone  = 0
	gsoTCPv4 = 1
	gsoUDPL4 = 5
)

type vnetHdr struct {
	flags, gsoType                         uint8
	hdrLen, gsoSize, csumStart, csumOffset uint16
}

func (h *vnetHdr) decode(b []byte) {
	h.flags, h.gsoType = b[0], b[1]
	h.hdrLen = binary.NativeEndian.Uint16(b[2:])
	h.gsoSize = binary.NativeEndian.Uint16(b[4:])
	h.csumStart = binary.NativeEndian.Uint16(b[6:])
	h.csumOffset = binary.NativeEndian.Uint16(b[8:])
}

func (h vnetHdr) encode(b []byte) {
	b[0], b[1] = h.flags, h.gsoType
	binary.NativeEndian.PutUint16(b[2:], h.hdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.gsoSize)
	binary.NativeEndian.PutUint16(b[6:], h.csumStart)
	binary.NativeEndian.PutUint16(b[8:], h.csumOffset)
}

const (
	protoICMP = 1
	protoTCP  = 6
	protoUDP  = 17

	tcpFlagFIN = 0x01
	tcpFlagSYN = 0x02
	tcpFlagRST = 0x04
	tcpFlagPSH = 0x08
	tcpFlagACK = 0x10
	tcpFlagURG = 0x20
	tcpFlagECE = 0x40
	tcpFlagCWR = 0x80
)

var errMalformed = errors.New("malformed packet")

// ipv4Header checks that p starts with a plausible IPv4 header and returns its
// length and the packet's total length.
func ipv4Header(p []byte) (ihl, total int, err error) {
	if len(p) < 20 || p[0]>>4 != 4 {
		return 0, 0, errMalformed
	}
	ihl = int(p[0]&0x0f) * 4
	total = int(binary.BigEndian.Uint16(p[2:]))
	if ihl < 20 || total < ihl || total > len(p) {
		return 0, 0, errMalformed
	}
	return ihl, total, nil
}

// checksum folds the one's complement sum of b into initial (which must
// be below 1<<48). It adds 64-bit big-endian words with end-around carry, 32
// bytes per iteration: a 64-bit word is congruent to the sum of its four
// 16-bit words modulo 0xffff, and so is 1<<64 to 1, so the result folds to
// the same 16-bit sum as adding 16-bit words would (RFC 1071).
func checksum(b []byte, initial uint64) uint64 {
	ac, carry := initial, uint64(0)
	for len(b) >= 32 {
		ac, carry = bits.Add64(ac, binary.BigEndian.Uint64(b), carry)
		ac, carry = bits.Add64(ac, binary.BigEndian.Uint64(b[8:]), carry)
		ac, carry = bits.Add64(ac, binary.BigEndian.Uint64(b[16:]), carry)
		ac, carry = bits.Add64(ac, binary.BigEndian.Uint64(b[24:]), carry)
		b = b[32:]
	}
	for len(b) >= 8 {
		ac, carry = bits.Add64(ac, binary.BigEndian.Uint64(b), carry)
		b = b[8:]
	}
	ac, carry = bits.Add64(ac, carry, 0)
	ac += carry
	// At most 1<<33 from here on: the tail cannot overflow.
	ac = ac>>32 + ac&0xffffffff
	if len(b) >= 4 {
		ac += uint64(binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		ac += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		ac += uint64(b[0]) << 8
	}
	return ac
}

func fold(ac uint64) uint16 {
	for ac > 0xffff {
		ac = (ac >> 16) + (ac & 0xffff)
	}
	return uint16(ac)
}

// pseudoSum is the IPv4 pseudo-header sum for an L4 segment of length n.
func pseudoSum(ip []byte, proto uint8, n int) uint64 {
	return checksum(ip[12:20], uint64(proto)+uint64(n))
}

// setIPv4Checksum recomputes the header checksum of ip.
func setIPv4Checksum(ip []byte, ihl int) {
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], ^fold(checksum(ip[:ihl], 0)))
}

// completeChecksum finishes a partial checksum the kernel left for us
// (VIRTIO_NET_HDR_F_NEEDS_CSUM): sum from csumStart to the end, store at
// csumStart+csumOffset. The field already holds the pseudo-header sum.
func completeChecksum(p []byte, h vnetHdr) error {
	start, at := int(h.csumStart), int(h.csumStart)+int(h.csumOffset)
	if start >= len(p) || at+2 > len(p) {
		return errMalformed
	}
	sum := ^fold(checksum(p[start:], 0))
	if sum == 0 && p[9] == protoUDP {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(p[at:], sum)
	return nil
}

// segment splits a TSO/USO packet read from the TUN (ip, described by h) into
// wire-sized IPv4 packets written back to back into out, each of length
// segLen except the last. It returns the bytes used and segLen.
func segment(ip []byte, h vnetHdr, out []byte) (n, segLen int, err error) {
	ihl, total, err := ipv4Header(ip)
	if err != nil {
		return 0, 0, err
	}
	ip = ip[:total]
	var l4 int
	switch {
	case h.gsoType == gsoTCPv4 && ip[9] == protoTCP && len(ip) >= ihl+20:
		l4 = int(ip[ihl+12]>>4) * 4
	case h.gsoType == gsoUDPL4 && ip[9] == protoUDP:
		l4 = 8
	default:
		return 0, 0, errMalformed
	}
	hdr := ihl + l4
	mss := int(h.gsoSize)
	if l4 < 8 || hdr > len(ip) || mss == 0 {
		return 0, 0, errMalformed
	}
	payload := ip[hdr:]
	id := binary.BigEndian.Uint16(ip[4:])
	for off, i := 0, 0; ; i++ {
		end := min(off+mss, len(payload))
		size := hdr + end - off
		if n+size > len(out) {
			return 0, 0, errMalformed
		}
		seg := out[n : n+size]
		copy(seg, ip[:hdr])
		copy(seg[hdr:], payload[off:end])
		binary.BigEndian.PutUint16(seg[2:], uint16(size))
		binary.BigEndian.PutUint16(seg[4:], id+uint16(i))
		setIPv4Checksum(seg, ihl)
		finishL4(seg, ihl, off, end == len(payload), i == 0)
		if i == 0 {
			segLen = size
		}
		n += size
		if off = end; off >= len(payload) {
			break
		}
	}
	return n, segLen, nil
}

// finishL4 fixes one segment's TCP sequence and flags (or UDP length) and its
// checksum.
func finishL4(seg []byte, ihl, off int, last, first bool) {
	l4 := seg[ihl:]
	var at int
	if seg[9] == protoTCP {
		seq := binary.BigEndian.Uint32(l4[4:])
		binary.BigEndian.PutUint32(l4[4:], seq+uint32(off))
		if !last {
			l4[13] &^= tcpFlagFIN | tcpFlagPSH
		}
		if !first {
			l4[13] &^= tcpFlagCWR
		}
		at = 16
	} else {
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		at = 6
	}
	l4[at], l4[at+1] = 0, 0
	sum := ^fold(checksum(l4, pseudoSum(seg, seg[9], len(l4))))
	if sum == 0 && seg[9] == protoUDP {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(l4[at:], sum)
}
