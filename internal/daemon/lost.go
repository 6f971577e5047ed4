//go:build linux

package daemon

import (
	"context"
	"time"
)

// Peers lost in a store reset (lease.Lost: etcd restarted from an empty data
// directory or an old snapshot). Their nodes may be alive and about to write
// their leases again, so their routes stay (no flap, no lost packet) until
// each lease would have expired; a lease written again for the key confirms
// the peer, and an ordinary removal (a deletion, an expiry etcd saw) removes
// it at once. A peer whose node never comes back is removed at its expiry.
// A restart of weftd in between reconciles the kernel to the store as it
// finds it, like any start.

// lostPeers is the set of peers kept after a store reset, with when each
// goes. The loop owns it.
type lostPeers struct {
	until map[string]time.Time
	timer *time.Timer // fires at the earliest until; stopped when empty
}

func newLostPeers() lostPeers {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return lostPeers{until: map[string]time.Time{}, timer: t}
}

// onLost records that the store lost key's lease: a known peer is kept
// until exp, the time its lease would have expired; one with no known
// expiry, or past it, is removed at once. It reports whether it removed.
func (dm *Daemon) onLost(key string, exp time.Time) bool {
	if _, known := dm.peers[key]; !known || key == dm.own.Key() {
		return false // the own lease is KeepLease's to write again
	}
	if !exp.After(time.Now()) {
		dm.log.Info("peer lease lost in a store reset, past its expiry; removing it", "lease", key)
		dm.removePeer(key)
		return true
	}
	if _, already := dm.lost.until[key]; !already {
		dm.log.Info("peer lease lost in a store reset; keeping its routes until it would have expired",
			"lease", key, "until", exp.Round(time.Second))
	}
	dm.lost.until[key] = exp
	return false
}

// settle ends a lost peer's grace, because its lease was written again
// (back) or removed; it reports whether key was lost.
func (dm *Daemon) settle(key string, back bool) bool {
	if _, ok := dm.lost.until[key]; !ok {
		return false
	}
	delete(dm.lost.until, key)
	if back {
		dm.log.Info("peer lease lost in a store reset was written again; keeping the peer", "lease", key)
	}
	return true
}

// armLost sets the timer to the earliest expiry of the lost peers.
func (dm *Daemon) armLost() {
	dm.lost.timer.Stop()
	var next time.Time
	for _, t := range dm.lost.until {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	if !next.IsZero() {
		dm.lost.timer.Reset(max(time.Until(next), 0))
	}
}

// expireLost removes the lost peers whose leases have expired by now.
func (dm *Daemon) expireLost(ctx context.Context) {
	now := time.Now()
	removed := 0
	for key, t := range dm.lost.until {
		if !t.After(now) {
			delete(dm.lost.until, key)
			dm.log.Info("peer lease lost in a store reset was not written again before it expired; removing it", "lease", key)
			dm.removePeer(key)
			dm.minute.removed++
			removed++
		}
	}
	dm.armLost()
	if removed > 0 {
		dm.apply(ctx)
		dm.countPeers()
		dm.snapshotChanged()
	}
}
