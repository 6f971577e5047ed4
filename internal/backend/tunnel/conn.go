//go:build linux

package tunnel

import (
	"net/netip"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// conn is the socket of one encapsulation: udp's UDP socket on the flannel
// port, or ipip's raw socket for IP protocol 4.
type conn interface {
	sender
	// read fills the batch (one recvmmsg) and returns how many messages
	// arrived.
	read(b *batch) (int, error)
	// message returns a received message's sender, the inner packets it
	// carries back to back, and the size of each (0: one packet).
	message(m *ipv4.Message) (src netip.AddrPort, packets []byte, size int)
	// gro reports whether the socket coalesces received packets (the
	// receive buffers must then hold 64 KiB).
	gro() bool
	setReadDeadline(time.Time) error
	Close() error
}

// batch is a set of receive buffers for one recvmmsg.
type batch struct {
	msgs []ipv4.Message
}

func newBatch(n, size int) *batch {
	b := &batch{msgs: make([]ipv4.Message, n)}
	for i := range b.msgs {
		b.msgs[i].Buffers = [][]byte{make([]byte, size)}
		b.msgs[i].OOB = make([]byte, unix.CmsgSpace(4))
	}
	return b
}

// read fills the batch from pc.
func (b *batch) read(pc *ipv4.PacketConn) (int, error) {
	for i := range b.msgs {
		b.msgs[i].OOB = b.msgs[i].OOB[:cap(b.msgs[i].OOB)]
	}
	return pc.ReadBatch(b.msgs, 0)
}
