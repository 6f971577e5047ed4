// Package reconcile owns the kernel state weft programs for its peers: routes,
// neighbours and FDB entries. Lease events only change the desired State; the
// Reconciler diffs it against what it knows is in the kernel and applies
// idempotent writes (RouteReplace, NeighSet).
//
// Design notes:
//   - The Reconciler keeps "applied", its view of the kernel. An incremental
//     Apply diffs desired against applied in memory (cheap, no dumps), so a
//     lease event reaches the kernel in one write. A full Sync dumps the kernel
//     first and rebuilds applied, so it also removes what nobody asked for
//     (routes of nodes deleted while weftd was down) and restores what someone
//     removed. Sync runs at start-up, after a device is recreated and on a slow
//     period; netlink deletion notices (Forget) make the next Apply re-add a
//     removed object at once.
//   - Writes add before they delete, and the neighbour and FDB entry of a peer
//     go in before its route; a failed write leaves the object out of applied
//     so the next pass retries it.
//   - Ownership: a route is ours when its destination lies inside a cluster
//     network and is not one of the node's own subnets (flannel's routes from
//     before an upgrade are adopted that way); neighbours and FDB entries are
//     ours when they sit on a device weft manages.
package reconcile

import (
	"fmt"
	"net"
	"net/netip"
)

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

type neighKey struct {
	link int
	ip   netip.Addr
}

type fdbKey struct {
	link int
	mac  MAC
}

// Objects are one peer's kernel objects: a compact list, since thousands of
// peers each hold a few.
type Objects struct {
	Routes []Route
	Neighs []Neigh
	FDB    []FDB
}

// Len returns the number of objects.
func (o Objects) Len() int { return len(o.Routes) + len(o.Neighs) + len(o.FDB) }

// State is a set of kernel objects.
type State struct {
	Routes map[netip.Prefix]Route
	Neighs map[neighKey]Neigh
	FDB    map[fdbKey]FDB
}

// NewState returns an empty State.
func NewState() State {
	return State{Routes: map[netip.Prefix]Route{}, Neighs: map[neighKey]Neigh{}, FDB: map[fdbKey]FDB{}}
}

// AddRoute adds r (replacing a route to the same destination).
func (s State) AddRoute(r Route) { s.Routes[r.Dst.Masked()] = r }

// AddNeigh adds n.
func (s State) AddNeigh(n Neigh) { s.Neighs[neighKey{n.LinkIndex, n.IP}] = n }

// AddFDB adds f.
func (s State) AddFDB(f FDB) { s.FDB[fdbKey{f.LinkIndex, f.MAC}] = f }

func (s State) clone() State {
	c := NewState()
	for k, v := range s.Routes {
		c.Routes[k] = v
	}
	for k, v := range s.Neighs {
		c.Neighs[k] = v
	}
	for k, v := range s.FDB {
		c.FDB[k] = v
	}
	return c
}
