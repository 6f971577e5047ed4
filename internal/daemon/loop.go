//go:build linux

package daemon

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"time"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/kernel"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/reconcile"
	"github.com/weft-net/weft/internal/store"
)

// retryAfterFailure is how soon failed kernel writes are tried again.
const retryAfterFailure = time.Second

// initialSync lists the leases, computes every peer and does the first full
// Sync (which also removes what belongs to leases that are gone). It returns
// the snapshot the watch resumes from. With a store.StreamLister the peers
// are programmed part by part while the list is still being read.
func (dm *Daemon) initialSync(ctx context.Context) (store.Snapshot, error) {
	t0 := time.Now()
	// Adopt the kernel's objects before writing the list's peers (the list
	// itself may be under way: startList), Prune after it: nothing a
	// previous run left is deleted before every lease is known.
	if err := dm.rec.Adopt(); err != nil {
		return store.Snapshot{}, fmt.Errorf("read the kernel's objects: %w", err)
	}
	var snap store.Snapshot
	var st reconcile.Stats
	var err error
	if dm.list != nil {
		snap, st, err = dm.streamList(ctx, dm.list)
		dm.list = nil
	} else {
		snap, err = dm.d.Store.ListLeases(ctx)
	}
	if err != nil {
		return store.Snapshot{}, fmt.Errorf("list leases: %w", err)
	}
	listed := time.Since(t0)
	dm.forgetUnlisted(snap.Leases)
	for _, l := range snap.Leases {
		if old, ok := dm.peers[l.Key()]; !ok || !old.Equal(l) {
			dm.putPeer(l)
		}
	}
	pst, err := dm.rec.Prune(ctx)
	if pp, ok := dm.be.(backend.PeerPruner); ok {
		pp.PrunePeers()
	}
	dm.observe(pst, false)
	dm.countPeers()
	if err != nil {
		dm.log.Warn("initial sync left failures; retrying", "err", err)
		dm.scheduleRetry()
	}
	dm.log.Info("programmed peers", "peers", len(dm.peers), "skipped", len(dm.bad), "added", st.Added+pst.Added,
		"removed-stale", pst.Deleted, "listed-in", listed.Round(time.Microsecond), "took", time.Since(t0).Round(time.Microsecond))
	return snap, nil
}

// streamedList is a start-up list in progress: its parts as they are read,
// then its result.
type streamedList struct {
	parts chan []lease.Lease
	done  chan listResult
}

type listResult struct {
	snap store.Snapshot
	err  error
}

// startList starts listing the leases through sl; streamList consumes the
// parts. A list nobody consumes ends with ctx.
func (dm *Daemon) startList(ctx context.Context, sl store.StreamLister) *streamedList {
	l := &streamedList{parts: make(chan []lease.Lease, 4), done: make(chan listResult, 1)}
	dm.wg.Add(1)
	go func() {
		defer dm.wg.Done()
		defer close(l.parts)
		snap, err := sl.ListLeasesStream(ctx, func(part []lease.Lease) {
			select {
			case l.parts <- part:
			case <-ctx.Done():
			}
		})
		l.done <- listResult{snap, err}
	}()
	return l
}

// streamList writes the peers of each part of list while the store reads
// the next, and returns the list's result.
func (dm *Daemon) streamList(ctx context.Context, list *streamedList) (store.Snapshot, reconcile.Stats, error) {
	var st reconcile.Stats
	for part := range list.parts {
		for _, l := range part {
			dm.putPeer(l)
		}
		pst, err := dm.rec.Apply(ctx)
		dm.observe(pst, false)
		st.Added += pst.Added
		if err != nil && ctx.Err() == nil {
			dm.log.Warn("kernel writes failed; retrying after the list", "err", err)
		}
	}
	r := <-list.done
	return r.snap, st, r.err
}

// putPeer records a lease and its desired kernel objects.
func (dm *Daemon) putPeer(l lease.Lease) {
	key := l.Key()
	if key == dm.own.Key() {
		return
	}
	dm.peers[key] = l
	st, err := dm.be.Peer(dm.own, l)
	if err != nil {
		if dm.bad[key] != err.Error() {
			dm.bad[key] = err.Error()
			attrs := []any{"lease", key, "public-ip", l.Attrs.PublicIP, "reason", err.Error()}
			if l.Node != "" {
				attrs = append(attrs, "node", l.Node)
			}
			dm.log.Warn("ignoring peer lease", attrs...)
			dm.ignored(err)
		}
		dm.rec.RemovePeer(key)
		return
	}
	delete(dm.bad, key)
	dm.rec.SetPeer(key, st)
	if _, ok := dm.be.(backend.PeerForgetter); ok {
		dm.m.Writes.WithLabelValues("peer", "add").Inc()
	}
}

func (dm *Daemon) removePeer(key string) {
	delete(dm.peers, key)
	delete(dm.bad, key)
	dm.rec.RemovePeer(key)
	if f, ok := dm.be.(backend.PeerForgetter); ok {
		f.ForgetPeer(key)
		dm.m.Writes.WithLabelValues("peer", "del").Inc()
	}
}

// replayPeers recomputes every peer and the node's own objects (device
// indices or the own subnets changed).
func (dm *Daemon) replayPeers() {
	for _, key := range dm.rec.Peers() {
		dm.rec.RemovePeer(key)
	}
	dm.setNodeObjects()
	for _, l := range dm.peers {
		dm.putPeer(l)
	}
}

func (dm *Daemon) loop(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	notices := make(chan kernel.Notice, 1024)
	if err := dm.nl.Monitor(ctx, notices, &dm.wg); err != nil {
		return err
	}
	snap, err := dm.initialSync(ctx)
	if err != nil {
		return err
	}
	dm.snapshotChanged() // written once the node is up, off the start-up path
	// Start-up decoded every lease twice (acquire and list) and built large
	// netlink batches; return that garbage to the OS now rather than carry
	// it as RSS for the daemon's lifetime.
	debug.FreeOSMemory()
	dm.health.ready.Store(true)
	dm.log.Info("node is up", "lease", dm.own.Key(), "public-ip", dm.own.Attrs.PublicIP, "backend", dm.nc.Backend.Type,
		"mtu", dm.be.MTU(), "peers", len(dm.peers), "startup", time.Since(dm.started).Round(time.Microsecond))
	if dm.d.Ready != nil {
		dm.d.Ready(dm.own)
	}
	events := make(chan []lease.Event, 64)
	keepEvents := make(chan []lease.Event, 64) // own-lease changes, for KeepLease
	owns := make(chan lease.Lease, 4)
	fatal := make(chan error, 3)
	dm.startWatchers(ctx, snap, events, keepEvents, owns, fatal)
	tick := time.NewTicker(dm.d.ResyncEvery)
	defer tick.Stop()
	summary := time.NewTicker(time.Minute)
	defer summary.Stop()
	for {
		select {
		case <-ctx.Done():
			if dm.snapDirty {
				dm.saveSnapshot()
			}
			dm.log.Info("stopping; the data plane stays in place")
			return nil
		case err := <-fatal:
			if ctx.Err() != nil {
				return nil
			}
			return err
		case batch := <-events:
			arrived := time.Now()
			dm.onLeases(batch)
			dm.forwardOwn(batch, keepEvents)
			dm.apply(ctx)
			dm.leaseToKernel(batch, arrived)
			dm.countPeers()
			dm.snapshotChanged()
		case <-dm.snapTimer.C:
			dm.saveSnapshot()
		case n := <-notices:
			dm.onNotices(ctx, n, notices)
		case l := <-owns:
			if err := dm.onOwnLease(ctx, l); err != nil {
				return err
			}
		case <-dm.retry.C:
			dm.apply(ctx)
		case <-dm.lost.timer.C:
			dm.expireLost(ctx)
		case <-summary.C:
			dm.summarize()
		case <-tick.C:
			dm.sync(ctx)
			if dm.snapshots() && time.Since(dm.snapWritten) > snapshotRefresh {
				dm.saveSnapshot()
			}
		}
	}
}

// startWatchers runs the lease watch, KeepLease and the rule resync; each
// reports on fatal when it ends with an error.
func (dm *Daemon) startWatchers(ctx context.Context, snap store.Snapshot, events chan []lease.Event,
	keepEvents chan []lease.Event, owns chan lease.Lease, fatal chan error) {
	// fatal has room for all three, so none blocks once the loop is gone.
	dm.wg.Go(func() { fatal <- wrapNonNil("watch leases", dm.d.Store.WatchLeases(ctx, snap, events)) })
	keep := store.KeepOptions{Request: store.AcquireRequest{Config: dm.nc, Attrs: dm.own.Attrs},
		Margin: dm.o.SubnetLeaseRenewMargin, Logger: dm.log.With("component", "lease"), Events: keepEvents}
	dm.keepHooks(&keep)
	dm.wg.Go(func() { fatal <- wrapNonNil("keep the lease", store.KeepLease(ctx, dm.d.Store, dm.own, keep, owns)) })
	if dm.rules != nil {
		dm.wg.Go(func() { fatal <- wrapNonNil("masquerade rules", dm.rules.Run(ctx)) })
	}
}

// onNotices handles a kernel notice and the burst behind it (a deleted
// device's routes go at once), then applies or resyncs once.
func (dm *Daemon) onNotices(ctx context.Context, first kernel.Notice, notices <-chan kernel.Notice) {
	full := dm.onNotice(ctx, first)
	for drained := false; !drained; {
		select {
		case n := <-notices:
			full = dm.onNotice(ctx, n) || full
		default:
			drained = true
		}
	}
	if full {
		dm.sync(ctx)
	} else {
		dm.apply(ctx)
	}
}

func wrapNonNil(what string, err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}

// forwardOwn passes the events about the own lease's key to KeepLease,
// which only needs those. It never blocks the loop: KeepLease confirms by
// renewing, so a dropped duplicate costs nothing.
func (dm *Daemon) forwardOwn(batch []lease.Event, keep chan<- []lease.Event) {
	var own []lease.Event
	for _, e := range batch {
		if e.Lease.Key() == dm.own.Key() {
			own = append(own, e)
		}
	}
	if len(own) == 0 {
		return
	}
	select {
	case keep <- own:
	default:
		dm.log.Warn("lease keeper is busy; dropped an own-lease event", "lease", dm.own.Key())
	}
}

func (dm *Daemon) onLeases(batch []lease.Event) {
	lost := false // the set of peers lost in a store reset changed (lost.go)
	for _, e := range batch {
		key := e.Lease.Key()
		switch e.Type {
		case lease.Added:
			if _, known := dm.peers[key]; !known && key != dm.own.Key() {
				dm.minute.added++
			}
			lost = dm.settle(key, true) || lost
			dm.putPeer(e.Lease)
		case lease.Removed:
			lost = dm.settle(key, false) || lost
			if key != dm.own.Key() {
				if _, known := dm.peers[key]; known {
					dm.minute.removed++
				}
				dm.removePeer(key)
			}
		case lease.Lost:
			if dm.onLost(key, e.Lease.Expiration) {
				dm.minute.removed++
			}
			lost = true
		}
	}
	if lost {
		dm.armLost()
	}
}

// onNotice handles a kernel notice; it reports whether a full sync is
// needed.
func (dm *Daemon) onNotice(ctx context.Context, n kernel.Notice) bool {
	switch n.Kind {
	case kernel.RouteGone:
		if dm.rec.ForgetRoute(n.Dst) {
			dm.log.Info("route removed by someone else; restoring", "dst", n.Dst)
			dm.repaired("route", 1)
		}
	case kernel.NeighGone:
		if slices.Contains(dm.be.Links(), n.LinkIndex) && dm.rec.ForgetNeigh(n.LinkIndex, n.IP) {
			dm.log.Info("neighbour removed by someone else; restoring", "ip", n.IP)
			dm.repaired("neigh", 1)
		}
	case kernel.FDBGone:
		if slices.Contains(dm.be.Links(), n.LinkIndex) && dm.rec.ForgetFDB(n.LinkIndex, n.MAC) {
			dm.log.Info("fdb entry removed by someone else; restoring", "mac", n.MAC)
			dm.repaired("fdb", 1)
		}
	case kernel.LinkGone:
		if dm.rec.MarkDevice(n.LinkName, n.LinkIndex) {
			dm.log.Info("device removed by someone else", "device", n.LinkName)
			dm.rec.ForgetLink(n.LinkIndex)
			return true
		}
	case kernel.LinkChanged, kernel.AddrChanged:
		// A device's MTU, MAC, up flag or address may have changed: the
		// next Apply checks it (and writes nothing when it is as wanted).
		dm.rec.MarkDevice(n.LinkName, n.LinkIndex)
	case kernel.Lost:
		dm.log.Warn("netlink notifications lost; resynchronising", "err", n.Err)
		return true
	}
	return false
}

// recreate has the backend make its missing devices again and replays every
// peer (the objects on the old devices went with them). It reports whether
// it did.
func (dm *Daemon) recreate(ctx context.Context, missing []string) bool {
	dm.log.Info("device missing or replaced; recreating it and replaying every peer", "devices", missing)
	for _, idx := range dm.be.Links() {
		dm.rec.ForgetLink(idx)
	}
	if err := dm.be.Ensure(ctx, dm.own); err != nil {
		dm.log.Error("recreate device", "err", err)
		dm.scheduleRetry()
		return false
	}
	dm.repaired("link", len(missing))
	dm.m.Writes.WithLabelValues("link", "add").Add(float64(len(missing)))
	dm.rec.SetDevices(dm.be.Devices())
	dm.rec.SetScope(dm.scope())
	dm.replayPeers()
	return true
}

func (dm *Daemon) apply(ctx context.Context) {
	st, err := dm.rec.Apply(ctx)
	dm.observe(st, false)
	if len(st.Missing) > 0 && dm.recreate(ctx, st.Missing) {
		dm.sync(ctx)
		return
	}
	if err != nil && ctx.Err() == nil {
		dm.log.Warn("kernel writes failed; retrying", "err", err)
		dm.scheduleRetry()
	}
}

func (dm *Daemon) sync(ctx context.Context) {
	st, err := dm.rec.Sync(ctx)
	dm.observe(st, true)
	if ps, ok := dm.be.(backend.PeerSyncer); ok {
		ps.SyncPeers()
	}
	if len(st.Missing) > 0 && dm.recreate(ctx, st.Missing) {
		// Once: a device that cannot be made waits for the retry timer.
		st, err = dm.rec.Sync(ctx)
		dm.observe(st, true)
		if len(st.Missing) > 0 {
			dm.log.Warn("devices still missing after their backend made them; retrying", "devices", st.Missing)
			dm.scheduleRetry()
		}
	}
	if err != nil && ctx.Err() == nil {
		dm.log.Warn("resync failed; retrying", "err", err)
		dm.scheduleRetry()
	}
	if st.Added+st.Deleted > 0 {
		dm.log.Info("resync repaired the kernel", "added", st.Added, "deleted", st.Deleted)
	}
}

func (dm *Daemon) scheduleRetry() {
	if dm.retry != nil {
		dm.retry.Reset(retryAfterFailure)
	}
}

// onOwnLease takes a re-acquired or renewed own lease: when its subnet
// changed, the device, rules, routes and subnet.env follow.
func (dm *Daemon) onOwnLease(ctx context.Context, l lease.Lease) error {
	changed := l.Key() != dm.own.Key()
	dm.own = l
	dm.ownLease(l)
	dm.snapshotChanged()
	if !changed {
		return nil
	}
	dm.log.Warn("own lease changed; reconfiguring", "lease", l.Key())
	if err := dm.be.Ensure(ctx, dm.own); err != nil {
		return fmt.Errorf("reconfigure the device for %s: %w", l.Key(), err)
	}
	dm.rec.SetDevices(dm.be.Devices())
	dm.rec.SetScope(dm.scope())
	if dm.rules != nil {
		if err := dm.rules.Set(ctx, dm.rulesConfig()); err != nil {
			return fmt.Errorf("masquerade rules: %w", err)
		}
	}
	dm.removePeer(l.Key())
	dm.replayPeers()
	dm.sync(ctx)
	return dm.writeSubnetFile()
}
