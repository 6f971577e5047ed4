package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
)

// Kernel is what the Reconciler needs from the kernel. Writes are idempotent:
// replacing an identical object and deleting an absent one succeed.
type Kernel interface {
	// ListRoutes returns the main table's routes whose destination lies in
	// one of networks (excluding routes the kernel made itself).
	ListRoutes(networks []netip.Prefix) ([]Route, error)
	// ListNeighs returns the permanent neighbours on the link.
	ListNeighs(linkIndex int) ([]Neigh, error)
	// ListFDB returns the permanent FDB entries with a destination on the link.
	ListFDB(linkIndex int) ([]FDB, error)
	ReplaceRoute(Route) error
	DeleteRoute(Route) error
	SetNeigh(Neigh) error
	DeleteNeigh(Neigh) error
	SetFDB(FDB) error
	DeleteFDB(FDB) error
}

// Scope says which kernel objects the Reconciler owns.
type Scope struct {
	// Networks are the cluster networks: routes inside them are ours...
	Networks []netip.Prefix
	// ...except routes to the node's own subnets.
	Own []netip.Prefix
	// Links are the devices whose neighbours and FDB entries are ours.
	Links []int
}

func (s Scope) ownsRoute(dst netip.Prefix) bool {
	for _, o := range s.Own {
		if o.Masked() == dst.Masked() {
			return false
		}
	}
	for _, n := range s.Networks {
		if dst.Bits() > n.Bits() && n.Contains(dst.Addr()) {
			return true
		}
	}
	return false
}

// Stats counts writes, for logs and benchmarks.
type Stats struct {
	Added, Deleted, Failed int
}

// Reconciler makes the kernel match a desired State, built per peer. Its
// methods are safe for concurrent use; writes are serialised.
type Reconciler struct {
	k   Kernel
	log *slog.Logger

	mu      sync.Mutex // guards the fields below
	scope   Scope
	peers   map[string]State // each peer's contribution to desired
	desired State            // the union of peers
	applied State            // what we know is in the kernel
	dirty   State            // keys to look at in the next pass (values unused)
	refs    map[any]int      // how many peers want each object key
}

// New returns a Reconciler that has applied nothing yet; call Sync first.
func New(k Kernel, log *slog.Logger) *Reconciler {
	return &Reconciler{k: k, log: log, peers: map[string]State{}, desired: NewState(), applied: NewState(), dirty: NewState(),
		refs: map[any]int{}}
}

// SetScope sets which kernel objects are weft's (used by Sync).
func (r *Reconciler) SetScope(scope Scope) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.scope = scope
}

// SetPeer replaces one peer's desired objects. It does not touch the kernel;
// Apply or Sync does.
func (r *Reconciler) SetPeer(key string, st State) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removePeerLocked(key)
	r.peers[key] = st
	for k, v := range st.Routes {
		r.desired.Routes[k] = v
		r.dirty.Routes[k] = v
		r.refs[k]++
	}
	for k, v := range st.Neighs {
		r.desired.Neighs[k] = v
		r.dirty.Neighs[k] = v
		r.refs[k]++
	}
	for k, v := range st.FDB {
		r.desired.FDB[k] = v
		r.dirty.FDB[k] = v
		r.refs[k]++
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
	for k, v := range old.Routes {
		r.dirty.Routes[k] = v
		if r.unref(k) {
			delete(r.desired.Routes, k)
		} else if r.desired.Routes[k] == v {
			r.desired.Routes[k] = r.otherRouteLocked(k)
		}
	}
	for k, v := range old.Neighs {
		r.dirty.Neighs[k] = v
		if r.unref(k) {
			delete(r.desired.Neighs, k)
		} else if r.desired.Neighs[k] == v {
			r.desired.Neighs[k] = r.otherNeighLocked(k)
		}
	}
	for k, v := range old.FDB {
		r.dirty.FDB[k] = v
		if r.unref(k) {
			delete(r.desired.FDB, k)
		} else if r.desired.FDB[k] == v {
			r.desired.FDB[k] = r.otherFDBLocked(k)
		}
	}
}

// unref drops one reference to an object key and reports whether none is left.
func (r *Reconciler) unref(k any) bool {
	r.refs[k]--
	if r.refs[k] <= 0 {
		delete(r.refs, k)
		return true
	}
	return false
}

func (r *Reconciler) otherRouteLocked(k netip.Prefix) Route {
	for _, p := range r.peers {
		if v, ok := p.Routes[k]; ok {
			return v
		}
	}
	return Route{}
}

func (r *Reconciler) otherNeighLocked(k neighKey) Neigh {
	for _, p := range r.peers {
		if v, ok := p.Neighs[k]; ok {
			return v
		}
	}
	return Neigh{}
}

func (r *Reconciler) otherFDBLocked(k fdbKey) FDB {
	for _, p := range r.peers {
		if v, ok := p.FDB[k]; ok {
			return v
		}
	}
	return FDB{}
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

// Desired returns a copy of the desired state.
func (r *Reconciler) Desired() State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.desired.clone()
}

// Apply writes what changed since the last pass: the objects of peers set or
// removed, and objects the kernel reported gone. It returns what it did and
// the joined errors of failed writes (each failed object is retried by the
// next pass).
func (r *Reconciler) Apply(ctx context.Context) (Stats, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applyLocked(ctx)
}

// Sync dumps the kernel objects in scope, adopts them as applied, and then
// applies the whole difference: objects out of place are rewritten, objects in
// scope that nobody wants are deleted (routes of nodes removed while weftd was
// down), missing ones are added.
func (r *Reconciler) Sync(ctx context.Context) (Stats, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := NewState()
	routes, err := r.k.ListRoutes(r.scope.Networks)
	if err != nil {
		return Stats{}, fmt.Errorf("list routes: %w", err)
	}
	for _, rt := range routes {
		if r.scope.ownsRoute(rt.Dst) {
			cur.AddRoute(rt)
		}
	}
	for _, link := range r.scope.Links {
		neighs, err := r.k.ListNeighs(link)
		if err != nil {
			return Stats{}, fmt.Errorf("list neighbours of link %d: %w", link, err)
		}
		for _, n := range neighs {
			cur.AddNeigh(n)
		}
		fdb, err := r.k.ListFDB(link)
		if err != nil {
			return Stats{}, fmt.Errorf("list fdb of link %d: %w", link, err)
		}
		for _, f := range fdb {
			cur.AddFDB(f)
		}
	}
	r.applied = cur
	r.dirty = r.desired.clone()
	for k, v := range cur.Routes {
		r.dirty.Routes[k] = v
	}
	for k, v := range cur.Neighs {
		r.dirty.Neighs[k] = v
	}
	for k, v := range cur.FDB {
		r.dirty.FDB[k] = v
	}
	return r.applyLocked(ctx)
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
func (r *Reconciler) ForgetFDB(link int, mac MAC) bool {
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

// Applied returns a copy of what the Reconciler believes is in the kernel.
func (r *Reconciler) Applied() State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applied.clone()
}
func (r *Reconciler) applyLocked(ctx context.Context) (Stats, error) {
	var st Stats
	var errs []error
	ok := func(what string, obj fmt.Stringer, err error) bool {
		if err != nil {
			st.Failed++
			errs = append(errs, fmt.Errorf("%s %s: %w", what, obj, err))
			return false
		}
		return true
	}
	d, a, dirty := r.desired, r.applied, r.dirty
	r.dirty = NewState()
	// Adds first: FDB entries and neighbours before the routes that use them.
	for k := range dirty.FDB {
		if want, has := d.FDB[k]; has {
			if got, in := a.FDB[k]; (!in || got != want) && ok("set fdb", want, r.k.SetFDB(want)) {
				a.FDB[k] = want
				st.Added++
			}
		}
	}
	for k := range dirty.Neighs {
		if want, has := d.Neighs[k]; has {
			if got, in := a.Neighs[k]; (!in || got != want) && ok("set neighbour", want, r.k.SetNeigh(want)) {
				a.Neighs[k] = want
				st.Added++
			}
		}
	}
	for k := range dirty.Routes {
		if ctx.Err() != nil {
			r.requeueLocked(dirty)
			return st, ctx.Err()
		}
		if want, has := d.Routes[k]; has {
			if got, in := a.Routes[k]; (!in || got != want) && ok("replace route", want, r.k.ReplaceRoute(want)) {
				a.Routes[k] = want
				st.Added++
			}
		}
	}
	// Then deletes: routes before the neighbours and FDB entries they use.
	for k := range dirty.Routes {
		if got, in := a.Routes[k]; in {
			if _, has := d.Routes[k]; !has && ok("delete route", got, r.k.DeleteRoute(got)) {
				delete(a.Routes, k)
				st.Deleted++
			}
		}
	}
	for k := range dirty.Neighs {
		if got, in := a.Neighs[k]; in {
			if _, has := d.Neighs[k]; !has && ok("delete neighbour", got, r.k.DeleteNeigh(got)) {
				delete(a.Neighs, k)
				st.Deleted++
			}
		}
	}
	for k := range dirty.FDB {
		if got, in := a.FDB[k]; in {
			if _, has := d.FDB[k]; !has && ok("delete fdb", got, r.k.DeleteFDB(got)) {
				delete(a.FDB, k)
				st.Deleted++
			}
		}
	}
	if st.Failed > 0 {
		r.requeueLocked(dirty)
	}
	if st.Added+st.Deleted+st.Failed > 0 {
		r.log.Debug("reconciled", "added", st.Added, "deleted", st.Deleted, "failed", st.Failed)
	}
	return st, errors.Join(errs...)
}

// requeueLocked marks the keys of dirty that have not converged for the next
// pass.
func (r *Reconciler) requeueLocked(dirty State) {
	d, a := r.desired, r.applied
	for k, v := range dirty.Routes {
		if want, has := d.Routes[k]; has != (a.Routes[k] == want && has) || !has && hasKey(a.Routes, k) {
			r.dirty.Routes[k] = v
		}
	}
	for k, v := range dirty.Neighs {
		if want, has := d.Neighs[k]; has != (a.Neighs[k] == want && has) || !has && hasKey(a.Neighs, k) {
			r.dirty.Neighs[k] = v
		}
	}
	for k, v := range dirty.FDB {
		if want, has := d.FDB[k]; has != (a.FDB[k] == want && has) || !has && hasKey(a.FDB, k) {
			r.dirty.FDB[k] = v
		}
	}
}

func hasKey[K comparable, V any](m map[K]V, k K) bool {
	_, ok := m[k]
	return ok
}
