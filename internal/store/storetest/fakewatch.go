package storetest

import (
	"context"
	"sort"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/store"
)

// WatchLeases implements store.Store.
func (f *Fake) WatchLeases(ctx context.Context, from store.Snapshot, out chan<- []lease.Event) error {
	cfg := f.checkConfig()
	tr := store.NewTracker(from.Leases)
	rev := from.Revision
	for {
		f.d.mu.Lock()
		var batch []lease.Event
		if rev == 0 || rev < f.d.compacted {
			valid, _ := f.decodeLocked(cfg)
			rev = f.d.rev
			batch = tr.Reset(valid)
		} else {
			i := sort.Search(len(f.d.history), func(i int) bool { return f.d.history[i].rev > rev })
			for _, c := range f.d.history[i:] {
				rev = c.rev
				if ev, ok := f.applyLocked(cfg, tr, c); ok {
					batch = append(batch, ev)
				}
			}
		}
		changed := f.d.changed
		f.d.mu.Unlock()
		if len(batch) > 0 {
			select {
			case out <- batch:
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (f *Fake) applyLocked(cfg *config.NetConf, tr *store.Tracker, c fakeChange) (lease.Event, bool) {
	if c.deleted {
		f.bad.Clear(c.key)
		return tr.Remove(c.key)
	}
	l, err := store.Decode(cfg, c.key, c.kv.value, c.kv.reservation)
	if err != nil {
		f.bad.Skip(c.key, err)
		return tr.Remove(c.key)
	}
	f.bad.Clear(c.key)
	return tr.Put(l)
}
