//go:build linux

package daemon

import (
	"context"
	"errors"
	"io"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/reconcile"
)

// snapshotDelay coalesces snapshot writes: a burst of lease events costs
// one write, at most this long after the first change.
const snapshotDelay = 50 * time.Millisecond

// snapshotRefresh is how often an unchanged snapshot is rewritten, so that
// its age says how recently a live weftd vouched for it.
const snapshotRefresh = time.Hour

// warmStart resumes the data path from the peer snapshot of the previous
// weftd, before the store is contacted: the backend is built from the
// snapshot's configuration, set up with its own lease, and given its peers.
// It reports whether it did; any problem is logged and leaves the daemon to
// start from the store alone.
func (dm *Daemon) warmStart(ctx context.Context) bool {
	t0 := time.Now()
	path := SnapshotPath(dm.o.SubnetFile)
	sn, err := readSnapshot(path, storeIdentity(&dm.o), t0)
	if errors.Is(err, errNoSnapshot) {
		return false
	}
	if err != nil {
		dm.log.Info("ignoring the peer snapshot", "file", path, "reason", err.Error())
		return false
	}
	// The store is not asked yet: the snapshot's public addresses stand in
	// for the ones it may give (node-public-ip), and setupBackend drops the
	// warm start if the store's choice differs.
	ext, _, err := chooseExternal(dm.nl, &dm.o, sn.nc, dm.snapshotAddrs(sn.own))
	if err != nil {
		dm.log.Info("ignoring the peer snapshot", "file", path, "reason", "no external interface: "+err.Error())
		return false
	}
	if ext.PublicIP != sn.own.Attrs.PublicIP || ext.PublicIPv6 != sn.own.Attrs.PublicIPv6 {
		dm.log.Info("ignoring the peer snapshot", "file", path, "reason", "it is of another public address",
			"snapshot-public-ip", sn.own.Attrs.PublicIP, "public-ip", ext.PublicIP)
		return false
	}
	be, err := dm.d.Backends.New(backend.Deps{Net: sn.nc, External: ext, Kernel: dm.nl,
		Logger: dm.log.With("backend", sn.nc.Backend.Type), Options: &dm.o})
	if err != nil {
		dm.log.Info("ignoring the peer snapshot", "file", path, "reason", err.Error())
		return false
	}
	if _, ok := be.(backend.PeerForgetter); !ok {
		closeBackend(be)
		dm.log.Info("ignoring the peer snapshot", "file", path, "reason", "the "+sn.nc.Backend.Type+" backend keeps its peers in the kernel")
		return false
	}
	if err := be.Ensure(ctx, sn.own); err != nil {
		closeBackend(be)
		dm.log.Info("ignoring the peer snapshot", "file", path, "reason", "set up the device: "+err.Error())
		return false
	}
	dm.nc, dm.ext, dm.be, dm.own = sn.nc, ext, be, sn.own
	dm.publishBackend()
	dm.rec = reconcile.New(dm.nl, dm.log.With("component", "reconciler"))
	dm.rec.SetDevices(be.Devices())
	dm.rec.SetScope(dm.scope())
	for _, p := range sn.peers {
		dm.putPeer(p)
	}
	dm.log.Info("resumed the data path from the peer snapshot; reconciling with the store next", "file", path,
		"backend", sn.nc.Backend.Type, "lease", sn.own.Key(), "peers", len(dm.peers),
		"age", t0.Sub(sn.written).Round(time.Millisecond), "took", time.Since(t0).Round(time.Microsecond))
	return true
}

// snapshotAddrs are the public addresses a warm start takes as given when
// the store can give some (publicAddrSource): the snapshot's own lease's,
// which the previous weftd used. Other stores give none, so the flags and
// the interface decide as at a cold start.
func (dm *Daemon) snapshotAddrs(own lease.Lease) givenAddrs {
	if _, ok := dm.d.Store.(publicAddrSource); !ok {
		return givenAddrs{}
	}
	return givenAddrs{v4: own.Attrs.PublicIP, v6: own.Attrs.PublicIPv6, from: [2]string{"the peer snapshot", "the peer snapshot"}}
}

// dropWarm undoes a warm start whose configuration the store no longer
// has: the backend is closed and its peers forgotten.
func (dm *Daemon) dropWarm() {
	closeBackend(dm.be)
	dm.be, dm.rec = nil, nil
	dm.publishBackend()
	clear(dm.peers)
	clear(dm.bad)
}

// closeBackend releases a backend that holds resources (the udp data path).
func closeBackend(be backend.Backend) {
	if c, ok := be.(io.Closer); ok {
		_ = c.Close()
	}
}

// forgetUnlisted removes the peers a warm start loaded whose leases the
// store no longer lists.
func (dm *Daemon) forgetUnlisted(listed []lease.Lease) {
	if len(dm.peers) == 0 {
		return
	}
	keep := make(map[string]bool, len(listed))
	for _, l := range listed {
		keep[l.Key()] = true
	}
	for _, key := range slices.Collect(maps.Keys(dm.peers)) {
		if !keep[key] {
			dm.log.Info("peer of the snapshot is gone from the store; removing it", "lease", key)
			dm.removePeer(key)
		}
	}
}

// snapshots reports whether this backend's data path needs the peer
// snapshot: only a backend whose peers live in userspace (udp's peer table,
// backend.PeerForgetter) forwards nothing until it is given its peers. A
// kernel backend's routes, neighbours and FDB entries outlive the process,
// so it needs none, and writing one would cost every change a file write.
func (dm *Daemon) snapshots() bool {
	_, ok := dm.be.(backend.PeerForgetter)
	return ok
}

// removeSnapshot deletes a snapshot left by a backend this node no longer
// runs, so that a later start does not resume it.
func (dm *Daemon) removeSnapshot() {
	path := SnapshotPath(dm.o.SubnetFile)
	if err := os.Remove(path); err == nil {
		dm.log.Info("removed the peer snapshot: this backend keeps its peers in the kernel", "file", path,
			"backend", dm.nc.Backend.Type)
	} else if !errors.Is(err, os.ErrNotExist) {
		dm.log.Warn("remove the peer snapshot", "file", path, "err", err)
	}
}

// snapshotChanged schedules a snapshot write.
func (dm *Daemon) snapshotChanged() {
	if !dm.snapshots() {
		return
	}
	if !dm.snapDirty {
		dm.snapDirty = true
		dm.snapTimer.Reset(snapshotDelay)
	}
}

// saveSnapshot writes the snapshot now; a failure is logged (the snapshot
// only speeds up the next start).
func (dm *Daemon) saveSnapshot() {
	dm.snapDirty = false
	peers := make([]lease.Lease, 0, len(dm.peers))
	for _, key := range slices.Sorted(maps.Keys(dm.peers)) {
		peers = append(peers, dm.peers[key])
	}
	data, err := encodeSnapshot(time.Now(), storeIdentity(&dm.o), dm.nc, dm.own, peers)
	if err == nil {
		err = writeSnapshot(SnapshotPath(dm.o.SubnetFile), data)
	}
	if err != nil {
		dm.log.Warn("peer snapshot not written", "err", err)
		return
	}
	dm.snapWritten = time.Now()
}
