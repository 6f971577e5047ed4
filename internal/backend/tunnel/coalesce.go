//go:build linux

package tunnel

import (
	"bytes"
	"encoding/binary"
)

// maxIPLen is the largest IPv4 packet, and so the largest coalesced one.
const maxIPLen = 65535

// coalescer passes inner packets to the TUN, merging consecutive in-order
// TCP segments of one flow into one large packet with a virtio-net GSO header
// (what the sender's TSO split, received with UDP GRO, becomes one packet for
// the kernel again: userspace GRO). Anything it cannot merge goes alone.
type coalescer struct {
	write   func([]byte) error // takes vnet header + packet
	buf     []byte             // vnet header + the packet being built
	n       int                // bytes of packet in buf[vnetHdrLen:]; 0 when empty
	ihl     int
	hdr     int    // IP + TCP header length
	segSize int    // payload of the first segment
	segs    int    // segments merged
	nextSeq uint32 // sequence number the next segment must carry
	closed  bool   // the last segment was short or pushed: nothing may follow
	noMerge bool   // pass every packet alone (benchmarks)
}

func newCoalescer(write func([]byte) error) *coalescer {
	return &coalescer{write: write, buf: make([]byte, vnetHdrLen+maxIPLen)}
}

// add takes one validated IPv4 packet.
func (c *coalescer) add(p []byte) error {
	if c.n > 0 && c.mergeable(p) {
		c.merge(p)
		return nil
	}
	if err := c.flush(); err != nil {
		return err
	}
	copy(c.buf[vnetHdrLen:], p)
	c.n, c.segs, c.closed = len(p), 1, true
	ihl := int(p[0]&0x0f) * 4
	if p[9] != protoTCP || len(p) < ihl+20 || binary.BigEndian.Uint16(p[6:])&0x3fff != 0 {
		return nil
	}
	hdr := ihl + int(p[ihl+12]>>4)*4
	flags := p[ihl+13]
	if hdr < ihl+20 || hdr >= len(p) || (flags != tcpFlagACK && flags != tcpFlagACK|tcpFlagPSH) {
		return nil
	}
	c.ihl, c.hdr, c.segSize = ihl, hdr, len(p)-hdr
	c.nextSeq = binary.BigEndian.Uint32(p[ihl+4:]) + uint32(c.segSize)
	c.closed = flags&tcpFlagPSH != 0
	return nil
}

// mergeable reports whether p continues the packet in buf.
func (c *coalescer) mergeable(p []byte) bool {
	if c.closed || c.noMerge || c.segs == 0 || len(p) <= c.hdr || len(p)-c.hdr > c.segSize || c.n+len(p)-c.hdr > maxIPLen {
		return false
	}
	q := c.buf[vnetHdrLen:]
	// Same version/IHL, TOS, flags/fragment, TTL, protocol, addresses.
	if p[0] != q[0] || p[1] != q[1] || !bytes.Equal(p[6:10], q[6:10]) || !bytes.Equal(p[12:c.ihl], q[12:c.ihl]) {
		return false
	}
	t, u := p[c.ihl:c.hdr], q[c.ihl:c.hdr]
	flags := t[13]
	if (flags != tcpFlagACK && flags != tcpFlagACK|tcpFlagPSH) || t[12] != u[12] ||
		!bytes.Equal(t[0:4], u[0:4]) || !bytes.Equal(t[8:12], u[8:12]) || !bytes.Equal(t[14:16], u[14:16]) ||
		!bytes.Equal(t[20:], u[20:]) {
		return false
	}
	return binary.BigEndian.Uint32(t[4:]) == c.nextSeq
}

func (c *coalescer) merge(p []byte) {
	payload := p[c.hdr:]
	copy(c.buf[vnetHdrLen+c.n:], payload)
	c.n += len(payload)
	c.segs++
	c.nextSeq += uint32(len(payload))
	flags := p[c.ihl+13]
	c.buf[vnetHdrLen+c.ihl+13] |= flags & tcpFlagPSH
	c.closed = len(payload) < c.segSize || flags&tcpFlagPSH != 0
}

// flush writes the pending packet.
func (c *coalescer) flush() error {
	if c.n == 0 {
		return nil
	}
	pkt := c.buf[vnetHdrLen : vnetHdrLen+c.n]
	h := vnetHdr{}
	if c.segs > 1 {
		binary.BigEndian.PutUint16(pkt[2:], uint16(c.n))
		setIPv4Checksum(pkt, c.ihl)
		tcp := pkt[c.ihl:]
		tcp[16], tcp[17] = 0, 0
		binary.BigEndian.PutUint16(tcp[16:], fold(pseudoSum(pkt, protoTCP, len(tcp))))
		h = vnetHdr{flags: vnetFlagNeedsCsum, gsoType: gsoTCPv4, hdrLen: uint16(c.hdr), gsoSize: uint16(c.segSize),
			csumStart: uint16(c.ihl), csumOffset: 16}
	}
	h.encode(c.buf)
	c.n, c.segs = 0, 0
	return c.write(c.buf[:vnetHdrLen+len(pkt)])
}
