//go:build linux

package netlinkx

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Connection is a tracked connection's original direction: the first
// packet's addresses, IP protocol and destination port.
type Connection struct {
	Src, Dst netip.Addr
	Proto    uint8
	DstPort  uint16
}

// DeleteConnections deletes, in the handle's namespace, the tracked
// connections (both families) for which match returns true, and returns how
// many it deleted. Their next packet is a new connection's first.
func (h *Handle) DeleteConnections(match func(Connection) bool) (int, error) {
	ct, err := netlink.NewHandleAt(h.ns, unix.NETLINK_NETFILTER)
	if err != nil {
		return 0, fmt.Errorf("open conntrack netlink handle: %w", err)
	}
	defer ct.Close()
	f := connFilter(match)
	total := 0
	for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		n, err := ct.ConntrackDeleteFilters(netlink.ConntrackTable, fam, f)
		total += int(n)
		if err != nil {
			return total, fmt.Errorf("delete conntrack entries: %w", err)
		}
	}
	return total, nil
}

type connFilter func(Connection) bool

// MatchConntrackFlow implements netlink.CustomConntrackFilter.
func (f connFilter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	src, ok1 := netip.AddrFromSlice(flow.Forward.SrcIP)
	dst, ok2 := netip.AddrFromSlice(flow.Forward.DstIP)
	if !ok1 || !ok2 {
		return false
	}
	return f(Connection{Src: src.Unmap(), Dst: dst.Unmap(), Proto: flow.Forward.Protocol, DstPort: flow.Forward.DstPort})
}
