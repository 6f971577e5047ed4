// Package kernel is the seam between weft and the kernel's network state: the
// kernel objects weft programs (links, addresses, routes, neighbours, FDB
// entries), the notices of their deletion, and the Kernel interface that
// internal/netlinkx implements over rtnetlink and kerneltest fakes in memory.
//
// It is a leaf: it imports nothing of weft, so that the netlink wrapper, the
// reconciler, the backends and the daemon all speak its types without
// importing each other.
package kernel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
)

// ErrLinkNotFound is what Kernel.LinkByName returns (wrapped) for a name no
// link has.
var ErrLinkNotFound = errors.New("link not found")

// Route is a route in the main table.
type Route struct {
	Dst       netip.Prefix
	Gw        netip.Addr // invalid for a device route
	LinkIndex int
	OnLink    bool
	// Blackhole makes it a blackhole route (no gateway, no device) at the
	// kernel writer's blackhole metric: --ip-blackhole-route's route to the
	// node's own subnet.
	Blackhole bool
}

func (r Route) String() string {
	if r.Blackhole {
		return "blackhole " + r.Dst.String()
	}
	s := r.Dst.String()
	if r.Gw.IsValid() {
		s += " via " + r.Gw.String()
	}
	s += fmt.Sprintf(" dev #%d", r.LinkIndex)
	if r.OnLink {
		s += " onlink"
	}
	return s
}

// Neigh is a permanent neighbour (ARP/NDP) entry.
type Neigh struct {
	IP        netip.Addr
	MAC       MAC
	LinkIndex int
}

func (n Neigh) String() string { return fmt.Sprintf("%s lladdr %s dev #%d", n.IP, n.MAC, n.LinkIndex) }

// FDB is a permanent bridge forwarding entry on a vxlan device: frames for
// MAC go to the VTEP at Dst.
type FDB struct {
	MAC       MAC
	Dst       netip.Addr
	LinkIndex int
}

func (f FDB) String() string { return fmt.Sprintf("%s dst %s dev #%d", f.MAC, f.Dst, f.LinkIndex) }

// MAC is a 48-bit hardware address usable as a map key.
type MAC [6]byte

// ParseMAC parses "22:56:a3:21:8b:8d".
func ParseMAC(s string) (MAC, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return MAC{}, fmt.Errorf("%q is not a 48-bit MAC address", s)
	}
	return MAC(hw), nil
}

// HardwareAddr returns m as a net.HardwareAddr.
func (m MAC) HardwareAddr() net.HardwareAddr { return net.HardwareAddr(m[:]) }

func (m MAC) String() string { return m.HardwareAddr().String() }

// IsZero reports whether m is all zeros (no address).
func (m MAC) IsZero() bool { return m == MAC{} }

// Link kinds weft creates or meets.
const (
	KindVXLAN     = "vxlan"
	KindIPIP      = "ipip"
	KindWireGuard = "wireguard"
	KindTUN       = "tun"
)

// VXLAN is a vxlan link's own settings.
type VXLAN struct {
	VNI int
	// Dev is the underlay device's index.
	Dev   int
	Local netip.Addr
	// Port is the UDP destination port; 0 lets the kernel pick its
	// default (and matches any port when comparing).
	Port     int
	Learning bool
	GBP      bool
}

// IPIP is an ipip link's own settings.
type IPIP struct {
	Local netip.Addr
	// Remote is the fixed peer; invalid for flannel's device, which has none.
	Remote netip.Addr
}

// Link is a link as the kernel reports it.
type Link struct {
	Index int
	Name  string
	// Kind is the rtnetlink kind ("vxlan", "ipip", "tun", "veth", ...); ""
	// for a device without one (loopback, a physical NIC).
	Kind string
	MTU  int
	MAC  MAC
	Up   bool
	// VXLAN and IPIP are set for links of those kinds.
	VXLAN *VXLAN
	IPIP  *IPIP
}

// LinkSpec is a link to create.
type LinkSpec struct {
	Name  string
	Kind  string // KindVXLAN, KindIPIP or KindWireGuard
	MTU   int    // 0: the kernel's default
	MAC   MAC    // zero: the kernel picks one
	VXLAN *VXLAN // for KindVXLAN
	IPIP  *IPIP  // for KindIPIP
}

// Device is a device weft owns, as desired state: the reconciler keeps its
// MTU, MAC, addresses and up flag as given, and reports it missing so that
// its backend makes it again.
type Device struct {
	Name string
	MTU  int
	// MAC, when not zero, is the address the device must have (a VTEP).
	MAC MAC
	// Addrs are the device's addresses with their prefix lengths: it has
	// exactly these, apart from the link-local ones the kernel adds.
	Addrs []netip.Prefix
}

// Equal reports whether d and o want the same.
func (d Device) Equal(o Device) bool {
	if d.Name != o.Name || d.MTU != o.MTU || d.MAC != o.MAC || len(d.Addrs) != len(o.Addrs) {
		return false
	}
	for i := range d.Addrs {
		if d.Addrs[i] != o.Addrs[i] {
			return false
		}
	}
	return true
}

// NoticeKind says what a Notice reports.
type NoticeKind int

// Notice kinds.
const (
	// RouteGone: a route was deleted.
	RouteGone NoticeKind = iota
	// NeighGone: a neighbour entry was deleted.
	NeighGone
	// FDBGone: an FDB entry was deleted.
	FDBGone
	// LinkGone: a link was deleted.
	LinkGone
	// LinkChanged: a link was added or changed (its MTU, MAC or flags).
	LinkChanged
	// AddrChanged: an address was added to or removed from a link.
	AddrChanged
	// Lost: the subscription lost messages (socket overflow) or failed;
	// the receiver must resynchronise from a full dump.
	Lost
)

// Notice is a change the kernel reported.
type Notice struct {
	Kind      NoticeKind
	Dst       netip.Prefix // RouteGone; AddrChanged: the address with its prefix length
	IP        netip.Addr   // NeighGone
	MAC       MAC          // FDBGone
	LinkIndex int
	LinkName  string // LinkGone, LinkChanged
	Err       error  // Lost
}

// Kernel is the kernel's network state in one network namespace, as weft
// reads and writes it. Every write is idempotent: writing an object that is
// already there as given, and deleting one that is absent, succeed. Errors
// name the object.
type Kernel interface {
	// Links returns every link.
	Links() ([]Link, error)
	// LinkByName returns the link of that name, or an error wrapping
	// ErrLinkNotFound.
	LinkByName(name string) (Link, error)
	// AddLink creates a link; creating one whose name is taken fails.
	AddLink(LinkSpec) error
	// DeleteLink removes a link with everything on it.
	DeleteLink(index int) error
	// SetLinkMTU, SetLinkMAC and SetLinkUp change one attribute of a link.
	SetLinkMTU(index, mtu int) error
	SetLinkMAC(index int, mac MAC) error
	SetLinkUp(index int) error

	// Addrs returns a link's addresses with their prefix lengths.
	Addrs(index int) ([]netip.Prefix, error)
	// AddAddr adds an address to a link (replacing an equal one).
	AddAddr(index int, p netip.Prefix) error
	// DeleteAddr removes an address from a link.
	DeleteAddr(index int, p netip.Prefix) error

	// ListRoutes returns the main table's routes whose destination lies in
	// one of networks: unicast routes (not those the kernel made itself)
	// and blackhole routes at the blackhole metric.
	ListRoutes(networks []netip.Prefix) ([]Route, error)
	// ReplaceRoute writes a route in the main table, replacing the route
	// to the same destination.
	ReplaceRoute(Route) error
	// DeleteRoute removes the main table's route to r.Dst (of r's kind).
	DeleteRoute(Route) error
	// DefaultRouteLinks returns the links of the default routes, IPv4
	// first.
	DefaultRouteLinks() ([]int, error)
	// RouteTo returns the link the kernel would send a packet for dst out
	// of.
	RouteTo(dst netip.Addr) (int, error)

	// ListNeighs returns the permanent neighbours on a link.
	ListNeighs(linkIndex int) ([]Neigh, error)
	SetNeigh(Neigh) error
	DeleteNeigh(Neigh) error
	// ListFDB returns the permanent FDB entries with a destination on a
	// link.
	ListFDB(linkIndex int) ([]FDB, error)
	SetFDB(FDB) error
	DeleteFDB(FDB) error

	// Monitor sends a Notice for every deletion of a route, neighbour, FDB
	// entry or link, and every link or address added, changed or removed, until ctx
	// ends. A full out blocks the readers, not the kernel: what the kernel
	// could not queue shows up as a Lost notice. Its goroutines are added
	// to wg.
	Monitor(ctx context.Context, out chan<- Notice, wg *sync.WaitGroup) error
}
