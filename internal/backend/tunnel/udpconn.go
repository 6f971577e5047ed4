//go:build linux

package tunnel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// maxGSOSegments is the kernel's limit on datagrams per UDP_SEGMENT send,
// and maxGSOBytes on their total (one IPv4 UDP datagram's payload): a 64 KiB
// TSO read cut into packets, each with its own headers, needs two sends.
const (
	maxGSOSegments = 64
	maxGSOBytes    = 0xffff - 20 - 8
)

// socketBuffer is the send and receive buffer size asked for.
const socketBuffer = 8 << 20

// udpConn is the udp encapsulation's socket on the flannel port. It sends
// with UDP GSO when the kernel takes it (falling back to one datagram per
// send) and receives in batches (recvmmsg) with UDP GRO.
type udpConn struct {
	uc    *net.UDPConn
	pc    *ipv4.PacketConn
	noGSO atomic.Bool
	groOn bool
}

var _ conn = (*udpConn)(nil)

// listenUDP binds the port on addr, or on every address when addr cannot be
// bound (a --public-ip that is a NAT address).
func listenUDP(addr netip.Addr, port int, gso, gro bool) (*udpConn, error) {
	pc, err := listenConfig().ListenPacket(context.Background(), "udp4", netip.AddrPortFrom(addr, uint16(port)).String())
	if err != nil && addr.IsValid() {
		pc, err = listenConfig().ListenPacket(context.Background(), "udp4", fmt.Sprintf(":%d", port))
	}
	if err != nil {
		return nil, fmt.Errorf("listen on udp port %d: %w", port, err)
	}
	c := &udpConn{uc: pc.(*net.UDPConn)}
	c.pc = ipv4.NewPacketConn(c.uc)
	c.noGSO.Store(!gso)
	if gro {
		if rc, err := c.uc.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) { c.groOn = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil })
		}
	}
	return c, nil
}

// listenConfig asks for large socket buffers (a burst of a 64 KiB TSO read
// is 45 packets).
func listenConfig() *net.ListenConfig {
	return &net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, socketBuffer}, {unix.SO_SNDBUFFORCE, socketBuffer}} {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], o[1])
			}
		})
	}}
}

func (c *udpConn) Close() error                      { return c.uc.Close() }
func (c *udpConn) gro() bool                         { return c.groOn }
func (c *udpConn) setReadDeadline(t time.Time) error { return c.uc.SetReadDeadline(t) }

// message returns a received datagram's sender, the inner packets (several
// of one size when UDP GRO coalesced them) and that size.
func (c *udpConn) message(m *ipv4.Message) (netip.AddrPort, []byte, int) {
	var src netip.AddrPort
	if a, ok := m.Addr.(*net.UDPAddr); ok {
		src = a.AddrPort()
	}
	return src, m.Buffers[0][:m.N], groSize(m.OOB[:m.NN])
}

// send sends b, back-to-back datagrams of segLen bytes, to dst.
func (c *udpConn) send(dst netip.AddrPort, b []byte, segLen int) error {
	if segLen == 0 || segLen >= len(b) {
		_, err := c.uc.WriteToUDPAddrPort(b, dst)
		return err
	}
	if !c.noGSO.Load() {
		err := c.sendGSO(dst, b, segLen)
		if err == nil || !gsoUnsupported(err) {
			return err
		}
		c.noGSO.Store(true)
	}
	for off := 0; off < len(b); off += segLen {
		if _, err := c.uc.WriteToUDPAddrPort(b[off:min(off+segLen, len(b))], dst); err != nil {
			return err
		}
	}
	return nil
}

func (c *udpConn) sendGSO(dst netip.AddrPort, b []byte, segLen int) error {
	var oob [unix.SizeofCmsghdr + 8]byte
	h := (*unix.Cmsghdr)(cmsgAt(oob[:]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(segLen))
	chunk := segLen * min(maxGSOSegments, maxGSOBytes/segLen)
	for off := 0; off < len(b); off += chunk {
		part := b[off:min(off+chunk, len(b))]
		if len(part) <= segLen {
			if _, err := c.uc.WriteToUDPAddrPort(part, dst); err != nil {
				return err
			}
			continue
		}
		if _, _, err := c.uc.WriteMsgUDPAddrPort(part, oob[:unix.CmsgSpace(2)], dst); err != nil {
			return err
		}
	}
	return nil
}

// gsoUnsupported reports whether a send failed because of UDP_SEGMENT
// itself (old kernel, a device without checksum offload).
func gsoUnsupported(err error) bool {
	return errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOPROTOOPT) || errors.Is(err, unix.EOPNOTSUPP)
}

// read fills the batch; it returns how many messages arrived.
func (c *udpConn) read(b *batch) (int, error) { return b.read(c.pc) }

// groSize returns the UDP GRO segment size carried in a message's control
// data, or 0.
func groSize(oob []byte) int {
	for len(oob) >= unix.CmsgLen(0) {
		h := (*unix.Cmsghdr)(cmsgAt(oob))
		l := int(h.Len)
		if l < unix.CmsgLen(0) || l > len(oob) {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && l >= unix.CmsgLen(2) {
			if l >= unix.CmsgLen(4) {
				return int(binary.NativeEndian.Uint32(oob[unix.CmsgLen(0):]))
			}
			return int(binary.NativeEndian.Uint16(oob[unix.CmsgLen(0):]))
		}
		oob = oob[min(unix.CmsgSpace(l-unix.CmsgLen(0)), len(oob)):]
	}
	return 0
}
