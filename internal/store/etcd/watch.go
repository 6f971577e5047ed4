package etcd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/store"
)

// watcher is one WatchLeases call.
type watcher struct {
	s     *Store
	out   chan<- []lease.Event
	cfg   *config.NetConf
	known *store.Tracker
	rev   int64 // last revision whose changes were applied
	// reset is what the reset check saw of etcd, and expiry what the
	// watcher knows of its leases' lifetimes (reset.go).
	reset  resetCheck
	expiry expiries
}

// WatchHealth implements store.HealthReporter.
func (s *Store) WatchHealth() *store.WatchHealth { return &s.health }

// WatchLeases implements store.Store.
func (s *Store) WatchLeases(ctx context.Context, from store.Snapshot, out chan<- []lease.Event) error {
	cfg, err := s.checkConfig(ctx)
	if err != nil {
		return fmt.Errorf("watch leases: %w", err)
	}
	w := &watcher{s: s, out: out, cfg: cfg, known: store.NewTracker(from.Leases), rev: from.Revision,
		expiry: newExpiries(from.Revision != 0)}
	if from.Revision == 0 {
		if err := w.relist(ctx, false); err != nil {
			return err
		}
	}
	backoff := 100 * time.Millisecond
	afterReset := false // a reset's re-list is still to do
	for {
		var err error
		if afterReset {
			if err = w.relist(ctx, true); err == nil {
				afterReset = false
			}
		}
		if err == nil {
			err = w.watchFrom(ctx)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.health.Interrupted()
		switch {
		case errors.Is(err, errReset) || errors.Is(err, rpctypes.ErrFutureRev):
			s.log.Warn("etcd was reset; re-listing and keeping the leases it lost until they would have expired",
				"after", w.rev, "reason", err)
			afterReset = true
			continue
		case errors.Is(err, rpctypes.ErrCompacted) && !afterReset:
			s.log.Info("lease watch history compacted, re-listing", "after", w.rev)
			if err = w.relist(ctx, false); err == nil {
				backoff = 100 * time.Millisecond
				continue
			}
		}
		s.log.Warn("lease watch interrupted, resuming", "after", w.rev, "err", err, "in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// relist replaces the known set by a fresh list and sends the difference.
// After a reset, leases that vanished are sent as lease.Lost with the time
// they would have expired, instead of lease.Removed.
func (w *watcher) relist(ctx context.Context, reset bool) error {
	snap, ids, err := w.s.list(ctx)
	if err != nil {
		return fmt.Errorf("watch leases: %w", err)
	}
	w.rev = snap.Revision
	w.reset.relisted(snap.Revision)
	batch := w.known.Reset(snap.Leases)
	if reset {
		now := w.s.now()
		for i, ev := range batch {
			if ev.Type == lease.Removed {
				batch[i].Type = lease.Lost
				batch[i].Lease.Expiration = w.expiry.until(ev.Lease.Key(), now.Add(w.s.ttl))
			}
		}
	}
	w.expiry.replace(ids)
	return store.SendBatch(ctx, w.out, batch)
}

// watchFrom runs one etcd watch after w.rev until it fails. It needs a
// leader, so a member cut off from the cluster does not keep it silent.
func (w *watcher) watchFrom(ctx context.Context) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	ch := w.s.cli.Watch(wctx, w.s.subnetsKey(), clientv3.WithPrefix(), clientv3.WithRev(w.rev+1),
		clientv3.WithProgressNotify(), clientv3.WithCreatedNotify())
	check := time.NewTicker(w.s.resetCheck)
	defer check.Stop()
	for {
		var resp clientv3.WatchResponse
		select {
		case <-check.C:
			if err := w.check(ctx); err != nil {
				return err
			}
			continue
		case r, ok := <-ch:
			if !ok {
				if err := ctx.Err(); err != nil {
					return err
				}
				return errors.New("watch channel closed")
			}
			resp = r
		}
		if resp.Err() == nil {
			w.s.health.Running()
		}
		if resp.Created {
			continue
		}
		if resp.CompactRevision != 0 {
			return rpctypes.ErrCompacted
		}
		if err := resp.Err(); err != nil {
			return err
		}
		if resp.IsProgressNotify() {
			// No events in our range up to this revision.
			w.rev = max(w.rev, resp.Header.Revision)
			continue
		}
		if err := store.SendBatch(ctx, w.out, w.apply(resp.Events)); err != nil {
			return err
		}
	}
}

// apply turns etcd events into lease events, dropping any at or before
// w.rev (a resumed watch never repeats a change).
func (w *watcher) apply(evs []*clientv3.Event) []lease.Event {
	var batch []lease.Event
	start := w.rev // one transaction's events share a revision
	for _, ev := range evs {
		kv := ev.Kv
		if kv.ModRevision <= start {
			continue
		}
		w.rev = max(w.rev, kv.ModRevision)
		key := string(kv.Key)
		name := key[len(w.s.subnetsKey()):]
		var (
			out lease.Event
			ok  bool
		)
		if ev.Type == mvccpb.DELETE {
			w.s.bad.Clear(key)
			out, ok = w.known.Remove(name)
			w.expiry.forget(name)
		} else if e := w.s.decode(w.cfg, key, kv.Value, kv.Lease, kv.ModRevision); e.valid {
			out, ok = w.known.Put(e.lease)
			w.expiry.put(name, e.leaseID)
		} else {
			out, ok = w.known.Remove(name)
			w.expiry.forget(name)
		}
		if ok {
			batch = append(batch, out)
		}
	}
	return batch
}
