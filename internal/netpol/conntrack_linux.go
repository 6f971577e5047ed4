package netpol

import (
	"github.com/weft-net/weft/internal/netlinkx"
)

// netlinkConntrack is the real Conntrack, in the caller's network
// namespace.
type netlinkConntrack struct{ h *netlinkx.Handle }

// NewConntrack returns the real Conntrack.
func NewConntrack() (Conntrack, error) {
	h, err := netlinkx.New()
	if err != nil {
		return nil, err
	}
	return netlinkConntrack{h}, nil
}

func (c netlinkConntrack) DeleteConnections(match func(Packet) bool) (int, error) {
	return c.h.DeleteConnections(func(x netlinkx.Connection) bool { return match(Packet(x)) })
}
