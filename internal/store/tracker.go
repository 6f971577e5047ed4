package store

import (
	"context"
	"hash/maphash"
	"log/slog"
	"sort"
	"sync"

	"github.com/weft-net/weft/internal/lease"
)

// Tracker is the set of leases a watcher has sent, by key. It turns store
// changes and re-lists into events, dropping updates that change nothing, so
// a watcher never sends the same state twice. It remembers each lease by its
// subnets and a digest of its value (lease.Hash), not the whole lease: the
// daemon holds the leases, and at thousands of peers a second copy would be
// a tenth of weftd's heap. A Removed event therefore carries only the
// lease's subnets. It is not safe for concurrent use.
type Tracker struct {
	seed  maphash.Seed
	known map[string]tracked
}

// tracked is what a Tracker keeps of one lease.
type tracked struct {
	hash uint64
	node string // lease.Node
}

// NewTracker starts from the leases already sent.
func NewTracker(leases []lease.Lease) *Tracker {
	t := &Tracker{seed: maphash.MakeSeed(), known: make(map[string]tracked, len(leases))}
	for _, l := range leases {
		t.known[l.Key()] = t.track(l)
	}
	return t
}

func (t *Tracker) track(l lease.Lease) tracked {
	return tracked{hash: l.Hash(t.seed), node: l.Node}
}

// Node returns the Node of the lease sent at key (lease.Node, which only
// names Nodes in stores that know them), and whether one was sent.
func (t *Tracker) Node(key string) (string, bool) {
	tr, ok := t.known[key]
	return tr.node, ok
}

// Put records a valid lease at key and returns the event to send, if any.
func (t *Tracker) Put(l lease.Lease) (lease.Event, bool) {
	k := l.Key()
	tr := t.track(l)
	old, ok := t.known[k]
	t.known[k] = tr
	if ok && old.hash == tr.hash {
		return lease.Event{}, false // the Node may differ; Equal ignores it
	}
	return lease.Event{Type: lease.Added, Lease: l}, true
}

// Remove records that key holds no valid lease any more.
func (t *Tracker) Remove(key string) (lease.Event, bool) {
	if _, ok := t.known[key]; !ok {
		return lease.Event{}, false
	}
	delete(t.known, key)
	// The key is a lease's Key(), which ParseKey reads back.
	v4, v6, _ := lease.ParseKey(key)
	return lease.Event{Type: lease.Removed, Lease: lease.Lease{Subnet: v4, IPv6Subnet: v6}}, true
}

// Reset replaces the known set by a full list and returns the difference:
// additions and changes first, then removals, each in key order.
func (t *Tracker) Reset(leases []lease.Lease) []lease.Event {
	var adds, removes []lease.Event
	seen := make(map[string]bool, len(leases))
	for _, l := range leases {
		seen[l.Key()] = true
		if ev, ok := t.Put(l); ok {
			adds = append(adds, ev)
		}
	}
	var gone []string
	for k := range t.known {
		if !seen[k] {
			gone = append(gone, k)
		}
	}
	sort.Strings(gone)
	for _, k := range gone {
		ev, _ := t.Remove(k)
		removes = append(removes, ev)
	}
	sort.SliceStable(adds, func(i, j int) bool { return adds[i].Lease.Key() < adds[j].Lease.Key() })
	return append(adds, removes...)
}

// BadKeys logs entries other writers left in the store that are not valid
// leases, once per key and reason: a re-list or a repeated watch event does
// not log again, a key that becomes valid and then bad again does. It is
// safe for concurrent use.
type BadKeys struct {
	log *slog.Logger

	mu     sync.Mutex
	reason map[string]string // guarded by mu
}

// NewBadKeys logs to log.
func NewBadKeys(log *slog.Logger) *BadKeys {
	return &BadKeys{log: log, reason: map[string]string{}}
}

// Skip reports that key was skipped because of err.
func (b *BadKeys) Skip(key string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.reason[key] == err.Error() {
		return
	}
	b.reason[key] = err.Error()
	b.log.Warn("skipping invalid lease in store", "key", key, "err", err)
}

// Clear forgets key (it is valid again, or deleted).
func (b *BadKeys) Clear(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.reason, key)
}

// SendBatch sends a watch's batch to out, unless it is empty (batches are
// never empty) or ctx ends first (then it returns ctx.Err()).
func SendBatch(ctx context.Context, out chan<- []lease.Event, batch []lease.Event) error {
	if len(batch) == 0 {
		return nil
	}
	select {
	case out <- batch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
