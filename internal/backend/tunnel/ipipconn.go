//go:build linux

package tunnel

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/ipv4"
)

// protoIPIP is IP protocol 4, IPv4 in IPv4 (RFC 2003): the inner packet
// right after the outer IPv4 header, nothing in between, as the kernel's
// ipip devices send it.
const protoIPIP = 4

// ipipConn is the ipip encapsulation's raw socket for IP protocol 4. The
// kernel writes the outer header (source: the bound address); a received
// packet comes with its outer header, which message strips. There is no
// segmentation offload for raw sockets: a TSO read cut into packets goes
// out in one sendmmsg.
type ipipConn struct {
	ic    *net.IPConn
	pc    *ipv4.PacketConn
	local netip.Addr
	msgs  sync.Pool // *[]ipv4.Message for sendmmsg, one per concurrent sender
}

var _ conn = (*ipipConn)(nil)

// listenIPIP opens the raw socket bound to addr (the outer source), or to
// every address when addr cannot be bound (a --public-ip that is a NAT
// address).
func listenIPIP(addr netip.Addr) (*ipipConn, error) {
	network := fmt.Sprintf("ip4:%d", protoIPIP)
	pc, err := listenConfig().ListenPacket(context.Background(), network, addr.String())
	if err != nil && addr.IsValid() {
		pc, err = listenConfig().ListenPacket(context.Background(), network, "0.0.0.0")
	}
	if err != nil {
		return nil, fmt.Errorf("open a raw socket for IP protocol %d: %w", protoIPIP, err)
	}
	c := &ipipConn{ic: pc.(*net.IPConn), local: addr}
	c.pc = ipv4.NewPacketConn(c.ic)
	c.msgs.New = func() any {
		m := make([]ipv4.Message, maxGSOSegments)
		for i := range m {
			m[i].Buffers = make([][]byte, 1)
		}
		return &m
	}
	return c, nil
}

func (c *ipipConn) Close() error { return c.ic.Close() }

// gro is true: the kernel's GRO for protocol 4 is part of the core kernel
// (module or not), so on a NIC with GRO on the raw socket reads merged
// packets of up to 64 KiB; the receive path cuts them back to the MTU.
func (c *ipipConn) gro() bool                         { return true }
func (c *ipipConn) setReadDeadline(t time.Time) error { return c.ic.SetReadDeadline(t) }
func (c *ipipConn) read(b *batch) (int, error)        { return b.read(c.pc) }

// send sends b, back-to-back packets of segLen bytes, each as one IP
// protocol 4 packet to dst's address, in sendmmsg batches.
func (c *ipipConn) send(dst netip.AddrPort, b []byte, segLen int) error {
	to := &net.IPAddr{IP: dst.Addr().AsSlice()}
	if segLen == 0 || segLen >= len(b) {
		_, err := c.ic.WriteTo(b, to)
		return err
	}
	mp := c.msgs.Get().(*[]ipv4.Message)
	defer c.msgs.Put(mp)
	msgs := *mp
	n := 0
	flush := func() error {
		for sent := 0; sent < n; {
			k, err := c.pc.WriteBatch(msgs[sent:n], 0)
			if err != nil {
				return err
			}
			sent += k
		}
		n = 0
		return nil
	}
	for off := 0; off < len(b); off += segLen {
		msgs[n].Buffers[0] = b[off:min(off+segLen, len(b))]
		msgs[n].Addr = to
		if n++; n == len(msgs) {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// message strips the outer IPv4 header a raw socket delivers and returns
// the sender's address (port 0) and the inner packet. A packet too short
// for its header, or not protocol 4, yields no packets.
func (c *ipipConn) message(m *ipv4.Message) (netip.AddrPort, []byte, int) {
	var src netip.AddrPort
	if a, ok := m.Addr.(*net.IPAddr); ok {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			src = netip.AddrPortFrom(ip.Unmap(), 0)
		}
	}
	return src, outerPayload(m.Buffers[0][:m.N]), 0
}

// outerPayload returns what follows a received packet's outer IPv4 header,
// or nil when the packet is not a plausible protocol-4 packet.
func outerPayload(p []byte) []byte {
	if len(p) < 20 || p[0]>>4 != 4 || p[9] != protoIPIP {
		return nil
	}
	ihl := int(p[0]&0x0f) * 4
	if ihl < 20 || ihl > len(p) {
		return nil
	}
	return p[ihl:]
}
