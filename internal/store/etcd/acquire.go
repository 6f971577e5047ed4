package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/store"
)

// maxAttempts bounds the transaction retries of one acquire or renew; each
// lost race means another node made progress.
const maxAttempts = 100

// errConflict means a transaction lost a race; the caller retries.
var errConflict = errors.New("store changed concurrently")

// AcquireLease implements store.Store.
func (s *Store) AcquireLease(ctx context.Context, req store.AcquireRequest) (lease.Lease, error) {
	if req.Config == nil {
		return lease.Lease{}, errors.New("acquire lease: no network config")
	}
	value, err := json.Marshal(req.Attrs)
	if err != nil {
		return lease.Lease{}, fmt.Errorf("acquire lease: %w", err)
	}
	for attempt := 0; attempt < maxAttempts; attempt++ {
		l, err := s.tryAcquire(ctx, req, value)
		if !errors.Is(err, errConflict) {
			return l, err
		}
		if err := s.sleepJitter(ctx, attempt); err != nil {
			return lease.Lease{}, err
		}
	}
	return lease.Lease{}, fmt.Errorf("acquire lease: %w %d times", errConflict, maxAttempts)
}

// tryAcquire makes one attempt from a fresh list.
func (s *Store) tryAcquire(ctx context.Context, req store.AcquireRequest, value []byte) (lease.Lease, error) {
	resp, err := s.cli.Get(ctx, s.subnetsKey(), clientv3.WithPrefix())
	if err != nil {
		return lease.Lease{}, fmt.Errorf("acquire lease: list %s: %w", s.subnetsKey(), err)
	}
	var taken []netip.Prefix
	var valid []lease.Lease
	byKey := map[string]entry{}
	for _, kv := range resp.Kvs {
		e := s.decode(req.Config, string(kv.Key), kv.Value, kv.Lease, kv.ModRevision)
		taken = append(taken, store.KeySubnets(string(kv.Key[len(s.subnetsKey()):]))...)
		if e.valid {
			valid = append(valid, e.lease)
			byKey[e.lease.Key()] = e
		}
	}
	own, found, stale := store.FindOwn(req.Config, req.Attrs, req.Previous, req.PreviousIPv6, valid)
	for _, l := range stale {
		if e := byKey[l.Key()]; !l.Reservation {
			s.deleteStale(ctx, l, e.modRev)
		}
	}
	if found {
		return s.takeOver(ctx, byKey[own.Key()], req.Attrs, value)
	}
	fresh, err := s.pick(req, taken)
	if err != nil {
		return lease.Lease{}, fmt.Errorf("acquire lease: %w", err)
	}
	return s.create(ctx, fresh, req.Attrs, value, resp.Header.Revision)
}

// create writes a new lease if its key is absent and nothing under subnets/
// changed after rev.
func (s *Store) create(ctx context.Context, l lease.Lease, attrs lease.Attrs, value []byte, rev int64) (lease.Lease, error) {
	now := s.now()
	grant, err := s.cli.Grant(ctx, int64(s.ttl/time.Second))
	if err != nil {
		return lease.Lease{}, fmt.Errorf("acquire lease: grant etcd lease: %w", err)
	}
	key := s.leaseKey(l)
	txn, err := s.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
		clientv3.Compare(clientv3.ModRevision(s.subnetsKey()), "<", rev+1).WithPrefix(),
	).Then(clientv3.OpPut(key, string(value), clientv3.WithLease(grant.ID))).Commit()
	if err != nil || !txn.Succeeded {
		s.revoke(grant.ID)
		if err != nil {
			return lease.Lease{}, fmt.Errorf("acquire lease: create %s: %w", key, err)
		}
		return lease.Lease{}, errConflict
	}
	l.Attrs, l.Expiration = attrs, now.Add(s.ttl)
	s.log.Info("lease created", "lease", l.Key(), "expires", l.Expiration)
	return l, nil
}

// takeOver rewrites the node's existing lease with its new value: a
// reservation stays without an etcd lease, an ordinary lease moves to a
// fresh etcd lease.
func (s *Store) takeOver(ctx context.Context, e entry, attrs lease.Attrs, value []byte) (lease.Lease, error) {
	l, err := s.rewrite(ctx, e, value)
	if err != nil {
		return lease.Lease{}, fmt.Errorf("acquire lease: %w", err)
	}
	l.Attrs = attrs
	s.log.Info("lease reused", "lease", l.Key(), "reservation", l.Reservation)
	return l, nil
}

// rewrite puts value at e's key if the key is unchanged since e was read.
func (s *Store) rewrite(ctx context.Context, e entry, value []byte) (lease.Lease, error) {
	key := s.leaseKey(e.lease)
	l := e.lease
	put := clientv3.OpPut(key, string(value))
	var grant *clientv3.LeaseGrantResponse
	now := s.now()
	if !l.Reservation {
		var err error
		if grant, err = s.cli.Grant(ctx, int64(s.ttl/time.Second)); err != nil {
			return lease.Lease{}, fmt.Errorf("grant etcd lease: %w", err)
		}
		put = clientv3.OpPut(key, string(value), clientv3.WithLease(grant.ID))
	}
	txn, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", e.modRev)).Then(put).Commit()
	if err != nil || !txn.Succeeded {
		if grant != nil {
			s.revoke(grant.ID)
		}
		if err != nil {
			return lease.Lease{}, fmt.Errorf("update %s: %w", key, err)
		}
		return lease.Lease{}, errConflict
	}
	if grant != nil {
		l.Expiration = now.Add(s.ttl)
		if e.leaseID != 0 && e.leaseID != grant.ID {
			s.revoke(e.leaseID)
		}
	}
	return l, nil
}

// RenewLease implements store.Store.
func (s *Store) RenewLease(ctx context.Context, l lease.Lease) (lease.Lease, error) {
	value, err := json.Marshal(l.Attrs)
	if err != nil {
		return lease.Lease{}, fmt.Errorf("renew lease %s: %w", l.Key(), err)
	}
	key := s.leaseKey(l)
	for attempt := 0; attempt < maxAttempts; attempt++ {
		resp, err := s.cli.Get(ctx, key)
		if err != nil {
			return lease.Lease{}, fmt.Errorf("renew lease: get %s: %w", key, err)
		}
		if len(resp.Kvs) == 0 {
			return lease.Lease{}, fmt.Errorf("renew lease %s: %w", l.Key(), store.ErrLeaseNotFound)
		}
		kv := resp.Kvs[0]
		attrs, err := lease.ParseAttrs(kv.Value)
		if err != nil || attrs.PublicIP != l.Attrs.PublicIP || attrs.PublicIPv6 != l.Attrs.PublicIPv6 {
			return lease.Lease{}, fmt.Errorf("renew lease %s: held by another node: %w", l.Key(), store.ErrLeaseNotFound)
		}
		e := entry{lease: l, valid: true, leaseID: clientv3.LeaseID(kv.Lease), modRev: kv.ModRevision}
		e.lease.Reservation = kv.Lease == 0
		e.lease.Expiration = time.Time{}
		out, err := s.rewrite(ctx, e, value)
		if err == nil {
			return out, nil
		}
		if !errors.Is(err, errConflict) {
			return lease.Lease{}, fmt.Errorf("renew lease: %w", err)
		}
	}
	return lease.Lease{}, fmt.Errorf("renew lease %s: %w %d times", l.Key(), errConflict, maxAttempts)
}

// deleteStale removes a lease of this node that no longer fits the config.
func (s *Store) deleteStale(ctx context.Context, l lease.Lease, modRev int64) {
	key := s.leaseKey(l)
	_, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", modRev)).
		Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		s.log.Warn("delete stale lease", "key", key, "err", err)
		return
	}
	s.log.Info("deleted own lease that no longer fits the network config", "key", key)
}

// revoke drops an etcd lease, best effort: an unused one expires anyway.
func (s *Store) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.cli.Revoke(ctx, id); err != nil {
		s.log.Debug("revoke etcd lease", "id", int64(id), "err", err)
	}
}

func (s *Store) pick(req store.AcquireRequest, taken []netip.Prefix) (lease.Lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return store.PickSubnets(req, taken, s.rnd)
}

// sleepJitter waits a random 5..50 ms, longer after many attempts, so racing
// nodes spread out.
func (s *Store) sleepJitter(ctx context.Context, attempt int) error {
	s.mu.Lock()
	d := time.Duration(5+s.rnd.IntN(45)) * time.Millisecond * time.Duration(1+attempt/10)
	s.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Expiry implements store.ExpiryReader from the etcd lease that holds l's
// key: granted (or renewed) GrantedTTL - TTL seconds ago, expiring in TTL.
func (s *Store) Expiry(ctx context.Context, l lease.Lease) (time.Time, time.Time, error) {
	resp, err := s.cli.Get(ctx, s.leaseKey(l))
	if err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("get %s: %w", s.leaseKey(l), err)
	}
	if len(resp.Kvs) == 0 {
		return time.Time{}, time.Time{}, fmt.Errorf("lease %s: %w", l.Key(), store.ErrLeaseNotFound)
	}
	if resp.Kvs[0].Lease == 0 {
		return time.Time{}, time.Time{}, nil // a reservation
	}
	ttl, err := s.cli.TimeToLive(ctx, clientv3.LeaseID(resp.Kvs[0].Lease))
	if err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("time to live of lease %s: %w", l.Key(), err)
	}
	if ttl.TTL < 0 {
		return time.Time{}, time.Time{}, fmt.Errorf("lease %s: %w", l.Key(), store.ErrLeaseNotFound)
	}
	now := time.Now()
	return now.Add(-time.Duration(ttl.GrantedTTL-ttl.TTL) * time.Second), now.Add(time.Duration(ttl.TTL) * time.Second), nil
}
