// Package storetest holds an in-memory lease store (Fake) and the
// conformance suite (Run) that every store.Store implementation passes: the
// fake, etcd (embedded and the etcd-server binary) and, later, Kubernetes.
package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/store"
)

// Fake is an in-memory store.Store with etcd's semantics: a revision
// counter, a change history that can be compacted, reservations as entries
// without expiry. Several Fakes made by Client share one keyspace, as nodes
// share one etcd. Leases do not expire by themselves: Expire ends one.
type Fake struct {
	d   *fakeData
	log *slog.Logger
	bad *store.BadKeys
}

var _ store.Store = (*Fake)(nil)

type fakeKV struct {
	value       []byte
	reservation bool
}

type fakeChange struct {
	rev     int64
	key     string
	kv      fakeKV
	deleted bool
}

type fakeData struct {
	ttl time.Duration
	now func() time.Time

	mu        sync.Mutex // guards everything below
	rnd       *rand.Rand
	cfg       []byte
	kv        map[string]fakeKV
	rev       int64
	compacted int64
	history   []fakeChange  // ascending rev, all > compacted
	changed   chan struct{} // closed on every change
}

// NewFake returns an empty store. now defaults to time.Now, rnd to a random
// generator, log to a discarding logger.
func NewFake(now func() time.Time, rnd *rand.Rand, log *slog.Logger) *Fake {
	if now == nil {
		now = time.Now
	}
	if rnd == nil {
		rnd = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	d := &fakeData{ttl: 24 * time.Hour, now: now, rnd: rnd, kv: map[string]fakeKV{}, changed: make(chan struct{})}
	return (&Fake{d: d}).Client(log)
}

// Client returns another client of the same keyspace, logging to log.
func (f *Fake) Client(log *slog.Logger) *Fake {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Fake{d: f.d, log: log, bad: store.NewBadKeys(log)}
}

// SetConfig stores net-conf.json text; "" removes the configuration (as
// an etcd restarted from an empty data directory has none).
func (f *Fake) SetConfig(netconf string) {
	f.d.mu.Lock()
	defer f.d.mu.Unlock()
	f.d.cfg = nil
	if netconf != "" {
		f.d.cfg = []byte(netconf)
	}
}

// Put writes a raw value at a key name under subnets/, as another writer would.
func (f *Fake) Put(name string, value []byte, reservation bool) {
	f.d.mu.Lock()
	defer f.d.mu.Unlock()
	f.d.putLocked(name, fakeKV{value: value, reservation: reservation})
}

// Delete removes a key name; Expire is the same, as etcd's expiry deletes.
func (f *Fake) Delete(name string) {
	f.d.mu.Lock()
	defer f.d.mu.Unlock()
	f.d.deleteLocked(name)
}

// Expire ends the lease at name as if its TTL ran out.
func (f *Fake) Expire(name string) { f.Delete(name) }

// Get returns the raw value at name.
func (f *Fake) Get(name string) (value []byte, reservation, ok bool) {
	f.d.mu.Lock()
	defer f.d.mu.Unlock()
	kv, ok := f.d.kv[name]
	return kv.value, kv.reservation, ok
}

// Compact drops the change history up to the current revision.
func (f *Fake) Compact() {
	f.d.mu.Lock()
	defer f.d.mu.Unlock()
	f.d.compacted = f.d.rev
	f.d.history = nil
}

func (d *fakeData) putLocked(name string, kv fakeKV) {
	d.rev++
	d.kv[name] = kv
	d.history = append(d.history, fakeChange{rev: d.rev, key: name, kv: kv})
	d.notifyLocked()
}

func (d *fakeData) deleteLocked(name string) {
	if _, ok := d.kv[name]; !ok {
		return
	}
	d.rev++
	delete(d.kv, name)
	d.history = append(d.history, fakeChange{rev: d.rev, key: name, deleted: true})
	d.notifyLocked()
}

func (d *fakeData) notifyLocked() {
	close(d.changed)
	d.changed = make(chan struct{})
}

// NetworkConfig implements store.Store.
func (f *Fake) NetworkConfig(ctx context.Context) (*config.NetConf, error) {
	f.d.mu.Lock()
	raw := f.d.cfg
	f.d.mu.Unlock()
	if raw == nil {
		return nil, fmt.Errorf("fake: %w", store.ErrNoConfig)
	}
	cfg, _, err := config.ParseNetConf(raw)
	if err != nil {
		return nil, fmt.Errorf("fake config: %w", err)
	}
	return cfg, nil
}

func (f *Fake) checkConfig() *config.NetConf {
	cfg, err := f.NetworkConfig(context.Background())
	if err != nil {
		return nil
	}
	return cfg
}

// decodeLocked returns the valid leases and every key's subnets.
func (f *Fake) decodeLocked(cfg *config.NetConf) ([]lease.Lease, []netip.Prefix) {
	names := make([]string, 0, len(f.d.kv))
	for k := range f.d.kv {
		names = append(names, k)
	}
	sort.Strings(names)
	var valid []lease.Lease
	var taken []netip.Prefix
	for _, k := range names {
		kv := f.d.kv[k]
		taken = append(taken, store.KeySubnets(k)...)
		l, err := store.Decode(cfg, k, kv.value, kv.reservation)
		if err != nil {
			f.bad.Skip(k, err)
			continue
		}
		f.bad.Clear(k)
		valid = append(valid, l)
	}
	return valid, taken
}

// AcquireLease implements store.Store.
func (f *Fake) AcquireLease(ctx context.Context, req store.AcquireRequest) (lease.Lease, error) {
	value, err := json.Marshal(req.Attrs)
	if err != nil {
		return lease.Lease{}, fmt.Errorf("acquire lease: %w", err)
	}
	f.d.mu.Lock()
	defer f.d.mu.Unlock()
	valid, taken := f.decodeLocked(req.Config)
	own, found, stale := store.FindOwn(req.Config, req.Attrs, req.Previous, req.PreviousIPv6, valid)
	for _, l := range stale {
		if !l.Reservation {
			f.d.deleteLocked(l.Key())
		}
	}
	l := own
	if !found {
		if l, err = store.PickSubnets(req, taken, f.d.rnd); err != nil {
			return lease.Lease{}, fmt.Errorf("acquire lease: %w", err)
		}
	}
	return f.writeLocked(l, req.Attrs, value), nil
}

func (f *Fake) writeLocked(l lease.Lease, attrs lease.Attrs, value []byte) lease.Lease {
	f.d.putLocked(l.Key(), fakeKV{value: value, reservation: l.Reservation})
	l.Attrs, l.Expiration = attrs, time.Time{}
	if !l.Reservation {
		l.Expiration = f.d.now().Add(f.d.ttl)
	}
	return l
}

// RenewLease implements store.Store.
func (f *Fake) RenewLease(ctx context.Context, l lease.Lease) (lease.Lease, error) {
	value, err := json.Marshal(l.Attrs)
	if err != nil {
		return lease.Lease{}, fmt.Errorf("renew lease: %w", err)
	}
	f.d.mu.Lock()
	defer f.d.mu.Unlock()
	kv, ok := f.d.kv[l.Key()]
	if !ok {
		return lease.Lease{}, fmt.Errorf("renew lease %s: %w", l.Key(), store.ErrLeaseNotFound)
	}
	attrs, err := lease.ParseAttrs(kv.value)
	if err != nil || attrs.PublicIP != l.Attrs.PublicIP || attrs.PublicIPv6 != l.Attrs.PublicIPv6 {
		return lease.Lease{}, fmt.Errorf("renew lease %s: held by another node: %w", l.Key(), store.ErrLeaseNotFound)
	}
	l.Reservation = kv.reservation
	return f.writeLocked(l, l.Attrs, value), nil
}

// ListLeases implements store.Store.
func (f *Fake) ListLeases(ctx context.Context) (store.Snapshot, error) {
	cfg := f.checkConfig()
	f.d.mu.Lock()
	defer f.d.mu.Unlock()
	valid, _ := f.decodeLocked(cfg)
	return store.Snapshot{Leases: valid, Revision: f.d.rev}, nil
}
