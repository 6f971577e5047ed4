//go:build linux

// Package netlinkx is weft's one wrapper over the netlink library: the only
// place that lists kernel objects. It retries dumps the kernel interrupted
// (a table changed mid-dump), sizes socket buffers for thousands of entries,
// converts between net/netip and the library's net types, and implements
// reconcile.Kernel.
package netlinkx

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/internal/kernel"
)

// RouteProtocol marks the routes weft installs ("proto 0x57" — 'W'), so an
// operator can tell them apart in `ip route`.
const RouteProtocol = netlink.RouteProtocol(0x57)

// socketBuffer is the receive buffer for dumps and notifications: enough for
// tens of thousands of routes without ENOBUFS.
const socketBuffer = 8 << 20

// dumpRetries bounds the retries of an interrupted dump.
const dumpRetries = 10

// Handle is a netlink handle bound to one network namespace.
type Handle struct {
	h  *netlink.Handle
	ns netns.NsHandle // netns.None(): the namespace weftd runs in
}

var _ kernel.Kernel = (*Handle)(nil)

// New opens a handle in the current network namespace.
func New() (*Handle, error) { return NewAt(netns.None()) }

// NewAt opens a handle with large socket buffers in ns (netns.None() for the
// current one). Tests run a daemon in-process against a namespace this way.
func NewAt(ns netns.NsHandle) (*Handle, error) {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink handle: %w", err)
	}
	// Best effort: force needs CAP_NET_ADMIN, which weftd has; unprivileged
	// tests fall back to the default size.
	if err := h.SetSocketReceiveBufferSize(socketBuffer, true); err != nil {
		_ = h.SetSocketReceiveBufferSize(socketBuffer, false)
	}
	return &Handle{h: h, ns: ns}, nil
}

// Close releases the handle's sockets.
func (h *Handle) Close() { h.h.Close() }

// retry runs a dump until the kernel reports it consistent.
func retry[T any](what string, dump func() ([]T, error)) ([]T, error) {
	for i := 0; ; i++ {
		out, err := dump()
		if err == nil {
			return out, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) || i >= dumpRetries {
			return nil, fmt.Errorf("dump %s: %w", what, err)
		}
	}
}

// ListRoutes returns the main table's non-kernel routes inside networks.
func (h *Handle) ListRoutes(networks []netip.Prefix) ([]kernel.Route, error) {
	var out []kernel.Route
	for _, fam := range families(networks) {
		routes, err := retry("routes", func() ([]netlink.Route, error) {
			return h.h.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		})
		if err != nil {
			return nil, err
		}
		for _, r := range routes {
			if r.Dst == nil || r.Protocol == unix.RTPROT_KERNEL {
				continue
			}
			dst := PrefixFromIPNet(r.Dst)
			if !insideAny(dst, networks) {
				continue
			}
			switch {
			case r.Type == unix.RTN_UNICAST:
				out = append(out, kernel.Route{Dst: dst, Gw: AddrFromIP(r.Gw), LinkIndex: r.LinkIndex,
					OnLink: r.Flags&int(netlink.FLAG_ONLINK) != 0})
			case r.Type == unix.RTN_BLACKHOLE && r.Priority == BlackholeMetric:
				out = append(out, kernel.Route{Dst: dst, Blackhole: true})
			}
		}
	}
	return out, nil
}

// ListNeighs returns the permanent neighbours on a link.
func (h *Handle) ListNeighs(linkIndex int) ([]kernel.Neigh, error) {
	var out []kernel.Neigh
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		neighs, err := retry("neighbours", func() ([]netlink.Neigh, error) { return h.h.NeighList(linkIndex, fam) })
		if err != nil {
			return nil, err
		}
		for _, n := range neighs {
			if n.State&netlink.NUD_PERMANENT == 0 || len(n.HardwareAddr) != 6 {
				continue
			}
			out = append(out, kernel.Neigh{IP: AddrFromIP(n.IP), MAC: kernel.MAC(n.HardwareAddr), LinkIndex: n.LinkIndex})
		}
	}
	return out, nil
}

// ListFDB returns the permanent FDB entries with a destination on a link.
func (h *Handle) ListFDB(linkIndex int) ([]kernel.FDB, error) {
	entries, err := retry("fdb", func() ([]netlink.Neigh, error) { return h.h.NeighList(linkIndex, unix.AF_BRIDGE) })
	if err != nil {
		return nil, err
	}
	var out []kernel.FDB
	for _, n := range entries {
		if n.State&netlink.NUD_PERMANENT == 0 || n.IP == nil || len(n.HardwareAddr) != 6 || n.LinkIndex != linkIndex {
			continue
		}
		out = append(out, kernel.FDB{MAC: kernel.MAC(n.HardwareAddr), Dst: AddrFromIP(n.IP), LinkIndex: n.LinkIndex})
	}
	return out, nil
}

func toRoute(r kernel.Route) *netlink.Route {
	if r.Blackhole {
		return &netlink.Route{Dst: IPNet(r.Dst), Table: unix.RT_TABLE_MAIN, Protocol: RouteProtocol,
			Type: unix.RTN_BLACKHOLE, Priority: BlackholeMetric}
	}
	nr := &netlink.Route{Dst: IPNet(r.Dst), LinkIndex: r.LinkIndex, Table: unix.RT_TABLE_MAIN, Protocol: RouteProtocol,
		Scope: netlink.SCOPE_UNIVERSE}
	if r.Gw.IsValid() {
		nr.Gw = r.Gw.AsSlice()
	} else {
		nr.Scope = netlink.SCOPE_LINK
	}
	if r.OnLink {
		nr.Flags = int(netlink.FLAG_ONLINK)
	}
	return nr
}

// ReplaceRoute installs or replaces a route.
func (h *Handle) ReplaceRoute(r kernel.Route) error { return h.h.RouteReplace(toRoute(r)) }

// DeleteRoute removes a route; an absent route is success. A blackhole
// route is named by its type and metric, so that the bridge's route to the
// same subnet stays.
func (h *Handle) DeleteRoute(r kernel.Route) error {
	nr := &netlink.Route{Dst: IPNet(r.Dst), Table: unix.RT_TABLE_MAIN}
	if r.Blackhole {
		nr.Type, nr.Priority = unix.RTN_BLACKHOLE, BlackholeMetric
	}
	if err := h.h.RouteDel(nr); err != nil && !errors.Is(err, unix.ESRCH) {
		return err
	}
	return nil
}

func toNeigh(n kernel.Neigh) *netlink.Neigh {
	fam := unix.AF_INET
	if n.IP.Is6() {
		fam = unix.AF_INET6
	}
	return &netlink.Neigh{LinkIndex: n.LinkIndex, Family: fam, State: netlink.NUD_PERMANENT, Type: unix.RTN_UNICAST,
		IP: n.IP.AsSlice(), HardwareAddr: n.MAC.HardwareAddr()}
}

// SetNeigh installs or replaces a permanent neighbour.
func (h *Handle) SetNeigh(n kernel.Neigh) error { return h.h.NeighSet(toNeigh(n)) }

// DeleteNeigh removes a neighbour; an absent one is success.
func (h *Handle) DeleteNeigh(n kernel.Neigh) error {
	if err := h.h.NeighDel(toNeigh(n)); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

func toFDB(f kernel.FDB) *netlink.Neigh {
	return &netlink.Neigh{LinkIndex: f.LinkIndex, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
		Flags: netlink.NTF_SELF, IP: f.Dst.AsSlice(), HardwareAddr: f.MAC.HardwareAddr()}
}

// SetFDB installs or replaces a permanent FDB entry.
func (h *Handle) SetFDB(f kernel.FDB) error { return h.h.NeighSet(toFDB(f)) }

// DeleteFDB removes an FDB entry; an absent one is success.
func (h *Handle) DeleteFDB(f kernel.FDB) error {
	if err := h.h.NeighDel(toFDB(f)); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

// DefaultRouteLinks returns the links of the default routes of both families.
func (h *Handle) DefaultRouteLinks() ([]int, error) {
	var out []int
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		routes, err := retry("routes", func() ([]netlink.Route, error) {
			return h.h.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		})
		if err != nil {
			return nil, err
		}
		for _, r := range routes {
			if (r.Dst == nil || PrefixFromIPNet(r.Dst).Bits() == 0) && r.LinkIndex > 0 {
				out = append(out, r.LinkIndex)
			}
		}
	}
	return out, nil
}

func families(networks []netip.Prefix) []int {
	var v4, v6 bool
	for _, n := range networks {
		v4, v6 = v4 || n.Addr().Is4(), v6 || n.Addr().Is6()
	}
	var out []int
	if v4 {
		out = append(out, unix.AF_INET)
	}
	if v6 {
		out = append(out, unix.AF_INET6)
	}
	return out
}

func insideAny(p netip.Prefix, networks []netip.Prefix) bool {
	for _, n := range networks {
		if p.Bits() >= n.Bits() && n.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// IPNet converts a prefix to the library's type.
func IPNet(p netip.Prefix) *net.IPNet {
	p = p.Masked()
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// PrefixFromIPNet converts (and masks) a library prefix.
func PrefixFromIPNet(n *net.IPNet) netip.Prefix {
	return PrefixFromIPNetKeepHost(n).Masked()
}

// PrefixFromIPNetKeepHost converts an address with its prefix length.
func PrefixFromIPNetKeepHost(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a := AddrFromIP(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones)
}

// AddrFromIP converts an IP, unmapping IPv4-in-IPv6; nil gives the zero Addr.
func AddrFromIP(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

// BlackholeMetric is the metric of blackhole routes (kernel.Route's
// Blackhole: --ip-blackhole-route's): above the kernel's prefix routes
// (IPv4 0, IPv6 256) and the default user route metric (IPv6 1024), so the
// bridge's route to the node's own pods (cni0's <subnet>.1/24) wins while it
// exists and the blackhole only catches the subnet's traffic when it does
// not. At metric 0 a replace would take the place of cni0's route (same
// destination and metric), and the node would drop its own pods' traffic.
const BlackholeMetric = 4095
