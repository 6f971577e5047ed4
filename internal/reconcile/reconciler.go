package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"

	"github.com/weft-net/weft/internal/kernel"
)

// Kernel is what the Reconciler needs from the kernel (a subset of
// kernel.Kernel). Writes are idempotent: replacing an identical object and
// deleting an absent one succeed.
type Kernel interface {
	// ListRoutes returns the main table's routes whose destination lies in
	// one of networks (excluding routes the kernel made itself).
	ListRoutes(networks []netip.Prefix) ([]kernel.Route, error)
	// ListNeighs returns the permanent neighbours on the link.
	ListNeighs(linkIndex int) ([]kernel.Neigh, error)
	// ListFDB returns the permanent FDB entries with a destination on the link.
	ListFDB(linkIndex int) ([]kernel.FDB, error)
	ReplaceRoute(kernel.Route) error
	DeleteRoute(kernel.Route) error
	SetNeigh(kernel.Neigh) error
	DeleteNeigh(kernel.Neigh) error
	SetFDB(kernel.FDB) error
	DeleteFDB(kernel.FDB) error
	// The devices' configuration (devices.go).
	LinkByName(name string) (kernel.Link, error)
	SetLinkMTU(index, mtu int) error
	SetLinkMAC(index int, mac kernel.MAC) error
	SetLinkUp(index int) error
	Addrs(index int) ([]netip.Prefix, error)
	AddAddr(index int, p netip.Prefix) error
	DeleteAddr(index int, p netip.Prefix) error
}

// Scope says which kernel objects the Reconciler owns.
type Scope struct {
	// Networks are the cluster networks: routes inside them are ours...
	Networks []netip.Prefix
	// ...except routes to the node's own subnets (the bridge's), other
	// than a blackhole route.
	Own []netip.Prefix
	// Links are the devices whose neighbours and FDB entries are ours, as
	// is a route to a whole cluster network through one of them (udp's
	// <Network> dev flannel0).
	Links []int
}

func (s Scope) ownsRoute(r kernel.Route) bool {
	dst := r.Dst
	for _, o := range s.Own {
		if o.Masked() == dst.Masked() && !r.Blackhole {
			return false
		}
	}
	for _, n := range s.Networks {
		if dst.Bits() > n.Bits() && n.Contains(dst.Addr()) {
			return true
		}
		if dst.Masked() == n.Masked() && r.LinkIndex > 0 && slices.Contains(s.Links, r.LinkIndex) {
			return true
		}
	}
	return false
}

// Stats counts writes, for logs and benchmarks.
type Stats struct {
	Added, Deleted, Failed int
	// Ops counts the successful writes by WriteOp.
	Ops [kernel.NumOps]int
	// DeviceWrites counts the writes that repaired a device's MTU, MAC,
	// addresses or up flag.
	DeviceWrites int
	// Missing are the desired devices the pass found missing, or made
	// again under another index: their backend must make them (again) and
	// every peer's objects be recomputed.
	Missing []string
}

// Reconciler makes the kernel match a desired State, built per peer. Its
// methods are safe for concurrent use; writes are serialised.
type Reconciler struct {
	k   Kernel
	log *slog.Logger

	mu      sync.Mutex // guards the fields below
	scope   Scope
	peers   map[string]Objects // each peer's contribution to desired
	desired State              // the union of peers
	applied State              // what we know is in the kernel
	dirty   State              // keys to look at in the next pass (values unused)
	shared  refs               // keys more than one peer wants: how many more
	// devices are the desired devices by name; devDirty the ones to check
	// in the next pass (devices.go).
	devices  map[string]*devState
	devDirty map[string]bool
}

// refs counts, per object key, the peers beyond the first that want it.
// Only a bad writer's duplicate subnets make one, so at thousands of peers
// the maps stay empty instead of holding a count per object.
type refs struct {
	routes map[netip.Prefix]int32
	neighs map[neighKey]int32
	fdb    map[fdbKey]int32
}

// New returns a Reconciler that has applied nothing yet; call Sync first.
func New(k Kernel, log *slog.Logger) *Reconciler {
	return &Reconciler{k: k, log: log, peers: map[string]Objects{}, desired: NewState(), applied: NewState(), dirty: NewState(),
		devices: map[string]*devState{}, devDirty: map[string]bool{},
		shared: refs{routes: map[netip.Prefix]int32{}, neighs: map[neighKey]int32{}, fdb: map[fdbKey]int32{}}}
}

// SetScope sets which kernel objects are weft's (used by Sync).
func (r *Reconciler) SetScope(scope Scope) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.scope = scope
}

// SetPeer replaces one peer's desired objects. It does not touch the kernel;
// Apply or Sync does.
func (r *Reconciler) SetPeer(key string, objs Objects) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removePeerLocked(key)
	for i := range objs.Routes {
		objs.Routes[i].Dst = objs.Routes[i].Dst.Masked()
	}
	r.peers[key] = objs
	for _, v := range objs.Routes {
		share(r.shared.routes, r.desired.Routes, v.Dst)
		r.desired.Routes[v.Dst] = v
		r.dirty.Routes[v.Dst] = v
	}
	for _, v := range objs.Neighs {
		k := neighKey{v.LinkIndex, v.IP}
		share(r.shared.neighs, r.desired.Neighs, k)
		r.desired.Neighs[k] = v
		r.dirty.Neighs[k] = v
	}
	for _, v := range objs.FDB {
		k := fdbKey{v.LinkIndex, v.MAC}
		share(r.shared.fdb, r.desired.FDB, k)
		r.desired.FDB[k] = v
		r.dirty.FDB[k] = v
	}
}

// RemovePeer drops one peer's desired objects.
func (r *Reconciler) RemovePeer(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removePeerLocked(key)
}

func (r *Reconciler) removePeerLocked(key string) {
	old, ok := r.peers[key]
	if !ok {
		return
	}
	delete(r.peers, key)
	// An object another peer also wants stays, with that peer's value (only
	// a bad writer's duplicate subnets make this happen).
	for _, v := range old.Routes {
		k := v.Dst
		r.dirty.Routes[k] = v
		if unref(r.shared.routes, k) {
			delete(r.desired.Routes, k)
		} else if r.desired.Routes[k] == v {
			r.desired.Routes[k] = r.otherLocked(func(o Objects) (kernel.Route, bool) {
				return find(o.Routes, func(x kernel.Route) bool { return x.Dst == k })
			})
		}
	}
	for _, v := range old.Neighs {
		k := neighKey{v.LinkIndex, v.IP}
		r.dirty.Neighs[k] = v
		if unref(r.shared.neighs, k) {
			delete(r.desired.Neighs, k)
		} else if r.desired.Neighs[k] == v {
			r.desired.Neighs[k] = r.otherNeighLocked(k)
		}
	}
	for _, v := range old.FDB {
		k := fdbKey{v.LinkIndex, v.MAC}
		r.dirty.FDB[k] = v
		if unref(r.shared.fdb, k) {
			delete(r.desired.FDB, k)
		} else if r.desired.FDB[k] == v {
			r.desired.FDB[k] = r.otherFDBLocked(k)
		}
	}
}

// share counts one more peer wanting key k when another already does
// (desired holds it).
func share[K comparable, V any](shared map[K]int32, desired map[K]V, k K) {
	if _, ok := desired[k]; ok {
		shared[k]++
	}
}

// unref drops one peer's want of k and reports whether none is left.
func unref[K comparable](shared map[K]int32, k K) bool {
	n, ok := shared[k]
	switch {
	case !ok:
		return true
	case n <= 1:
		delete(shared, k)
	default:
		shared[k] = n - 1
	}
	return false
}

func find[T any](xs []T, match func(T) bool) (T, bool) {
	for _, x := range xs {
		if match(x) {
			return x, true
		}
	}
	var zero T
	return zero, false
}

func (r *Reconciler) otherLocked(pick func(Objects) (kernel.Route, bool)) kernel.Route {
	for _, p := range r.peers {
		if v, ok := pick(p); ok {
			return v
		}
	}
	return kernel.Route{}
}

func (r *Reconciler) otherNeighLocked(k neighKey) kernel.Neigh {
	for _, p := range r.peers {
		if v, ok := find(p.Neighs, func(x kernel.Neigh) bool { return neighKey{x.LinkIndex, x.IP} == k }); ok {
			return v
		}
	}
	return kernel.Neigh{}
}

func (r *Reconciler) otherFDBLocked(k fdbKey) kernel.FDB {
	for _, p := range r.peers {
		if v, ok := find(p.FDB, func(x kernel.FDB) bool { return fdbKey{x.LinkIndex, x.MAC} == k }); ok {
			return v
		}
	}
	return kernel.FDB{}
}

// Peers returns the keys of the peers with desired objects.
func (r *Reconciler) Peers() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.peers))
	for k := range r.peers {
		out = append(out, k)
	}
	return out
}

// Apply writes what changed since the last pass: the objects of peers set or
// removed, and objects the kernel reported gone. It returns what it did and
// the joined errors of failed writes (each failed object is retried by the
// next pass).
func (r *Reconciler) Apply(ctx context.Context) (Stats, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applyLocked(ctx, false)
}

// Sync dumps the kernel objects in scope, adopts them as applied, and then
// applies the whole difference: objects out of place are rewritten, objects in
// scope that nobody wants are deleted (routes of nodes removed while weftd was
// down), missing ones are added.
func (r *Reconciler) Sync(ctx context.Context) (Stats, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.adoptLocked(); err != nil {
		return Stats{}, err
	}
	return r.pruneLocked(ctx)
}

// Adopt is the first half of Sync: it dumps the kernel objects in scope and
// takes them as applied, deleting nothing. Apply after it writes only the
// objects that are missing or differ, so that a start-up can program peers
// as their leases arrive, without rewriting what a previous run left in
// place, and Prune finishes the job once every lease is known.
func (r *Reconciler) Adopt() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.adoptLocked()
}

// Prune is the second half of Sync, against the kernel state of the last
// Adopt or Sync and the writes since: objects out of place are rewritten,
// objects in scope that nobody wants are deleted, missing ones are added.
func (r *Reconciler) Prune(ctx context.Context) (Stats, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pruneLocked(ctx)
}

func (r *Reconciler) adoptLocked() error {
	cur := NewState()
	routes, err := r.k.ListRoutes(r.scope.Networks)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	for _, rt := range routes {
		if r.scope.ownsRoute(rt) {
			cur.AddRoute(rt)
		}
	}
	for _, link := range r.scope.Links {
		neighs, err := r.k.ListNeighs(link)
		if err != nil {
			return fmt.Errorf("list neighbours of link %d: %w", link, err)
		}
		for _, n := range neighs {
			cur.AddNeigh(n)
		}
		fdb, err := r.k.ListFDB(link)
		if err != nil {
			return fmt.Errorf("list fdb of link %d: %w", link, err)
		}
		for _, f := range fdb {
			cur.AddFDB(f)
		}
	}
	r.applied = cur
	maps.Copy(r.dirty.Routes, r.desired.Routes)
	maps.Copy(r.dirty.Neighs, r.desired.Neighs)
	maps.Copy(r.dirty.FDB, r.desired.FDB)
	return nil
}

func (r *Reconciler) pruneLocked(ctx context.Context) (Stats, error) {
	// Only the keys whose applied object is not the desired one are marked
	// (with those already dirty): at start-up, after the streamed list has
	// written every peer, that is none of the 15,000 keys of 5,000 peers,
	// and copying them all into the dirty set cost tens of milliseconds
	// before the node was up.
	markDiff(r.desired.Routes, r.applied.Routes, r.dirty.Routes)
	markDiff(r.desired.Neighs, r.applied.Neighs, r.dirty.Neighs)
	markDiff(r.desired.FDB, r.applied.FDB, r.dirty.FDB)
	return r.applyLocked(ctx, true)
}

// markDiff adds to dirty the keys whose applied object differs from the
// desired one: missing, different, or applied but not desired.
func markDiff[K, V comparable](desired, applied, dirty map[K]V) {
	for k, want := range desired {
		if got, in := applied[k]; !in || got != want {
			dirty[k] = want
		}
	}
	for k, got := range applied {
		if _, has := desired[k]; !has {
			dirty[k] = got
		}
	}
}

// ForgetRoute, ForgetNeigh and ForgetFDB record that an object left the
// kernel (a netlink deletion notice), so that the next Apply restores it if
// it is still desired. They report whether it was one we had applied.
func (r *Reconciler) ForgetRoute(dst netip.Prefix) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.applied.Routes[dst.Masked()]
	if ok {
		delete(r.applied.Routes, dst.Masked())
		r.dirty.Routes[dst.Masked()] = v
	}
	return ok
}

// ForgetNeigh: see ForgetRoute.
func (r *Reconciler) ForgetNeigh(link int, ip netip.Addr) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := neighKey{link, ip}
	v, ok := r.applied.Neighs[k]
	if ok {
		delete(r.applied.Neighs, k)
		r.dirty.Neighs[k] = v
	}
	return ok
}

// ForgetFDB: see ForgetRoute.
func (r *Reconciler) ForgetFDB(link int, mac kernel.MAC) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := fdbKey{link, mac}
	v, ok := r.applied.FDB[k]
	if ok {
		delete(r.applied.FDB, k)
		r.dirty.FDB[k] = v
	}
	return ok
}

// ForgetLink drops everything applied on a link that disappeared.
func (r *Reconciler) ForgetLink(link int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forgetLinkLocked(link)
}

func (r *Reconciler) forgetLinkLocked(link int) {
	for k, v := range r.applied.Routes {
		if v.LinkIndex == link {
			delete(r.applied.Routes, k)
			r.dirty.Routes[k] = v
		}
	}
	for k, v := range r.applied.Neighs {
		if k.link == link {
			delete(r.applied.Neighs, k)
			r.dirty.Neighs[k] = v
		}
	}
	for k, v := range r.applied.FDB {
		if k.link == link {
			delete(r.applied.FDB, k)
			r.dirty.FDB[k] = v
		}
	}
}

// applyLocked checks the devices (the dirty ones, or all), then writes the
// objects of the dirty keys.
func (r *Reconciler) applyLocked(ctx context.Context, allDevices bool) (Stats, error) {
	var st Stats
	errs := r.devicesLocked(allDevices, &st)
	if len(st.Missing) > 0 {
		// The objects on a missing device cannot be written, and those of
		// the others are rewritten anyway once its backend has made it
		// again (the caller's next pass): write none now.
		return st, errors.Join(errs...)
	}
	dirty := r.dirty
	r.dirty = NewState()
	phases := r.planLocked(dirty)
	for _, op := range []kernel.WriteOp{kernel.OpSetFDB, kernel.OpSetNeigh, kernel.OpReplaceRoute, kernel.OpDeleteRoute, kernel.OpDeleteNeigh, kernel.OpDeleteFDB} {
		if ctx.Err() != nil {
			r.requeueLocked(dirty)
			return st, ctx.Err()
		}
		ws := phases[op]
		for i, err := range r.write(ws) {
			if err != nil {
				st.Failed++
				errs = append(errs, fmt.Errorf("%s: %w", ws[i], err))
				continue
			}
			r.recordLocked(ws[i])
			st.Ops[op]++
			if op.IsDelete() {
				st.Deleted++
			} else {
				st.Added++
			}
		}
	}
	if st.Failed > 0 {
		r.requeueLocked(dirty)
	}
	if st.Added+st.Deleted+st.Failed+st.DeviceWrites > 0 {
		r.log.Debug("reconciled", "added", st.Added, "deleted", st.Deleted, "failed", st.Failed, "device-writes", st.DeviceWrites)
	}
	return st, errors.Join(errs...)
}

// planLocked sorts the writes the dirty keys need into phases, indexed by
// kernel.WriteOp and run in order: FDB entries and neighbours before the routes that
// use them, then deletes, routes first.
func (r *Reconciler) planLocked(dirty State) [6][]kernel.Write {
	d, a := r.desired, r.applied
	var phases [6][]kernel.Write
	for k := range dirty.FDB {
		want, has := d.FDB[k]
		got, in := a.FDB[k]
		if has && (!in || got != want) {
			phases[kernel.OpSetFDB] = append(phases[kernel.OpSetFDB], kernel.Write{Op: kernel.OpSetFDB, FDB: want})
		} else if !has && in {
			phases[kernel.OpDeleteFDB] = append(phases[kernel.OpDeleteFDB], kernel.Write{Op: kernel.OpDeleteFDB, FDB: got})
		}
	}
	for k := range dirty.Neighs {
		want, has := d.Neighs[k]
		got, in := a.Neighs[k]
		if has && (!in || got != want) {
			phases[kernel.OpSetNeigh] = append(phases[kernel.OpSetNeigh], kernel.Write{Op: kernel.OpSetNeigh, Neigh: want})
		} else if !has && in {
			phases[kernel.OpDeleteNeigh] = append(phases[kernel.OpDeleteNeigh], kernel.Write{Op: kernel.OpDeleteNeigh, Neigh: got})
		}
	}
	for k := range dirty.Routes {
		want, has := d.Routes[k]
		got, in := a.Routes[k]
		if has && (!in || got != want) {
			phases[kernel.OpReplaceRoute] = append(phases[kernel.OpReplaceRoute], kernel.Write{Op: kernel.OpReplaceRoute, Route: want})
		} else if !has && in {
			phases[kernel.OpDeleteRoute] = append(phases[kernel.OpDeleteRoute], kernel.Write{Op: kernel.OpDeleteRoute, Route: got})
		}
	}
	return phases
}

// recordLocked updates applied after a successful write.
func (r *Reconciler) recordLocked(w kernel.Write) {
	a := r.applied
	switch w.Op {
	case kernel.OpSetFDB:
		a.AddFDB(w.FDB)
	case kernel.OpSetNeigh:
		a.AddNeigh(w.Neigh)
	case kernel.OpReplaceRoute:
		a.AddRoute(w.Route)
	case kernel.OpDeleteRoute:
		delete(a.Routes, w.Route.Dst.Masked())
	case kernel.OpDeleteNeigh:
		delete(a.Neighs, neighKey{w.Neigh.LinkIndex, w.Neigh.IP})
	case kernel.OpDeleteFDB:
		delete(a.FDB, fdbKey{w.FDB.LinkIndex, w.FDB.MAC})
	}
}

// requeueLocked marks the keys of dirty that have not converged for the next
// pass.
func (r *Reconciler) requeueLocked(dirty State) {
	requeue(dirty.Routes, r.desired.Routes, r.applied.Routes, r.dirty.Routes)
	requeue(dirty.Neighs, r.desired.Neighs, r.applied.Neighs, r.dirty.Neighs)
	requeue(dirty.FDB, r.desired.FDB, r.applied.FDB, r.dirty.FDB)
}

// requeue copies into next the keys of dirty whose applied object differs
// from the desired one (or is there when none is desired).
func requeue[K, V comparable](dirty, desired, applied, next map[K]V) {
	for k, v := range dirty {
		want, has := desired[k]
		got, in := applied[k]
		if has && (!in || got != want) || !has && in {
			next[k] = v
		}
	}
}

// Diff is Sync without the writes: it dumps the kernel objects in scope and
// returns the writes that would make them match the desired state (objects
// missing or different, and objects in scope that nobody wants), in the
// order Sync would make them. It changes nothing in the kernel; the
// reconciler then holds the dumped state as applied.
func (r *Reconciler) Diff() ([]kernel.Write, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.adoptLocked(); err != nil {
		return nil, err
	}
	dirty := r.desired.clone()
	maps.Copy(dirty.Routes, r.applied.Routes)
	maps.Copy(dirty.Neighs, r.applied.Neighs)
	maps.Copy(dirty.FDB, r.applied.FDB)
	var out []kernel.Write
	for _, phase := range r.planLocked(dirty) {
		out = append(out, phase...)
	}
	return out, nil
}
