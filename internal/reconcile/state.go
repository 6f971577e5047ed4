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
	"net/netip"

	"github.com/weft-net/weft/internal/kernel"
)

type neighKey struct {
	link int
	ip   netip.Addr
}

type fdbKey struct {
	link int
	mac  kernel.MAC
}

// Objects are one peer's kernel objects: a compact list, since thousands of
// peers each hold a few.
type Objects struct {
	Routes []kernel.Route
	Neighs []kernel.Neigh
	FDB    []kernel.FDB
}

// Len returns the number of objects.
func (o Objects) Len() int { return len(o.Routes) + len(o.Neighs) + len(o.FDB) }

// State is a set of kernel objects.
type State struct {
	Routes map[netip.Prefix]kernel.Route
	Neighs map[neighKey]kernel.Neigh
	FDB    map[fdbKey]kernel.FDB
}

// NewState returns an empty State.
func NewState() State {
	return State{Routes: map[netip.Prefix]kernel.Route{}, Neighs: map[neighKey]kernel.Neigh{}, FDB: map[fdbKey]kernel.FDB{}}
}

// AddRoute adds r (replacing a route to the same destination).
func (s State) AddRoute(r kernel.Route) { s.Routes[r.Dst.Masked()] = r }

// AddNeigh adds n.
func (s State) AddNeigh(n kernel.Neigh) { s.Neighs[neighKey{n.LinkIndex, n.IP}] = n }

// AddFDB adds f.
func (s State) AddFDB(f kernel.FDB) { s.FDB[fdbKey{f.LinkIndex, f.MAC}] = f }

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
