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
}

// WatchHealth implements store.HealthReporter.
func (s *Store) WatchHealth() *store.WatchHealth { return &s.health }

// WatchLeases implements store.Store.
func (s *Store) WatchLeases(ctx context.Context, from store.Snapshot, out chan<- []lease.Event) error {
	cfg, err := s.checkConfig(ctx)
	if err != nil {
		return fmt.Errorf("watch leases: %w", err)
	}
	w := &watcher{s: s, out: out, cfg: cfg, known: store.NewTracker(from.Leases), rev: from.Revision}
	if from.Revision == 0 {
		if err := w.relist(ctx); err != nil {
			return err
		}
	}
	backoff := 100 * time.Millisecond
	for {
		err := w.watchFrom(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.health.Interrupted()
		if errors.Is(err, rpctypes.ErrCompacted) {
			s.log.Info("lease watch history compacted, re-listing", "after", w.rev)
			if err = w.relist(ctx); err == nil {
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
func (w *watcher) relist(ctx context.Context) error {
	snap, err := w.s.ListLeases(ctx)
	if err != nil {
		return fmt.Errorf("watch leases: %w", err)
	}
	w.rev = snap.Revision
	return store.SendBatch(ctx, w.out, w.known.Reset(snap.Leases))
}

// watchFrom runs one etcd watch after w.rev until it fails. It needs a
// leader, so a member cut off from the cluster does not keep it silent.
func (w *watcher) watchFrom(ctx context.Context) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	ch := w.s.cli.Watch(wctx, w.s.subnetsKey(), clientv3.WithPrefix(), clientv3.WithRev(w.rev+1),
		clientv3.WithProgressNotify(), clientv3.WithCreatedNotify())
	for resp := range ch {
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
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.New("watch channel closed")
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
		} else if e := w.s.decode(w.cfg, key, kv.Value, kv.Lease, kv.ModRevision); e.valid {
			out, ok = w.known.Put(e.lease)
		} else {
			out, ok = w.known.Remove(name)
		}
		if ok {
			batch = append(batch, out)
		}
	}
	return batch
}
