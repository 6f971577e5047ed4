//go:build linux

package daemon

import (
	"errors"
	"time"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/backend/tunnel"
	"github.com/weft-net/weft/internal/kernel"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/metrics"
	"github.com/weft-net/weft/internal/reconcile"
	"github.com/weft-net/weft/internal/store"
)

// The daemon's side of the metrics: what the loop counts as it goes. Every
// update is an atomic add or store on a counter resolved here; nothing holds
// a lock a scrape also takes.

// observe counts a reconciler pass's writes and failures; a full resync's
// writes are also repairs (the kernel differed from what weft had written).
func (dm *Daemon) observe(st reconcile.Stats, repair bool) {
	m := dm.m
	for i, n := range st.Ops {
		if n == 0 {
			continue
		}
		op := kernel.WriteOp(i)
		verb := "add"
		if op.IsDelete() {
			verb = "del"
		}
		m.Writes.WithLabelValues(op.Object(), verb).Add(float64(n))
		if repair {
			dm.repaired(op.Object(), n)
		}
	}
	if n := st.DeviceWrites; n > 0 {
		// A device's MTU, MAC, address or up flag set. Once the node is up,
		// only someone else's change makes one (or a recreated device,
		// itself a repair).
		m.Writes.WithLabelValues("link", "set").Add(float64(n))
		if dm.health.ready.Load() {
			dm.repaired("link", n)
		}
	}
	if st.Failed > 0 {
		m.WriteErrors.Add(float64(st.Failed))
		dm.minute.writeErrors += st.Failed
	}
}

// repaired counts n objects someone else removed or changed that weft put
// back.
func (dm *Daemon) repaired(object string, n int) {
	dm.m.Repairs.WithLabelValues(object).Add(float64(n))
	dm.minute.repairs += n
}

// minuteSummary is what changed since the last summary line.
type minuteSummary struct {
	added, removed, repairs, writeErrors int
}

// summarize logs one line at info when anything changed in the last minute
// (peers added or removed, repairs, write errors), and starts a new minute.
func (dm *Daemon) summarize() {
	s := dm.minute
	if s == (minuteSummary{}) {
		return
	}
	dm.log.Info("last minute", "peers", len(dm.peers)-len(dm.bad), "peers-added", s.added, "peers-removed", s.removed,
		"repairs", s.repairs, "write-errors", s.writeErrors)
	dm.minute = minuteSummary{}
}

// countPeers sets weft_peers: the peers whose objects are programmed.
func (dm *Daemon) countPeers() {
	if dm.nc != nil {
		dm.m.Peers.WithLabelValues(dm.nc.Backend.Type).Set(float64(len(dm.peers) - len(dm.bad)))
	}
}

// ignored counts a peer lease the backend refused, by a bounded reason.
func (dm *Daemon) ignored(err error) {
	reason := metrics.ReasonUnusable
	switch {
	case errors.Is(err, backend.ErrOtherType):
		reason = metrics.ReasonBackendType
	case errors.Is(err, backend.ErrSelf):
		reason = metrics.ReasonSelf
	}
	dm.m.LeasesIgnored.WithLabelValues(reason).Inc()
}

// leaseToKernel observes, for each peer lease change of a batch, the time
// from the batch's arrival to its kernel writes.
func (dm *Daemon) leaseToKernel(batch []lease.Event, arrived time.Time) {
	d := time.Since(arrived).Seconds()
	for _, e := range batch {
		if e.Lease.Key() != dm.own.Key() {
			dm.m.LeaseToKernel.Observe(d)
		}
	}
}

// ownLease sets the own lease's expiry.
func (dm *Daemon) ownLease(l lease.Lease) {
	if l.Expiration.IsZero() {
		dm.m.LeaseExpiry.Set(0)
		return
	}
	dm.m.LeaseExpiry.Set(float64(l.Expiration.UnixMilli()) / 1000)
}

// keepHooks are KeepLease's renewal callbacks for the metrics.
func (dm *Daemon) keepHooks(o *store.KeepOptions) {
	o.Renewed = func(l lease.Lease) {
		dm.m.LeaseRenewals.WithLabelValues("success").Inc()
		dm.ownLease(l)
	}
	o.RenewFailed = func(error) { dm.m.LeaseRenewals.WithLabelValues("failure").Inc() }
}

// dataPathStats is an optional capability of a Backend with a userspace
// data path (udp, userspace ipip).
type dataPathStats interface {
	DataPathStats() (encap string, s *tunnel.Stats)
}

// watchMetrics makes the store's watch health and the backend's userspace
// counters part of every scrape; both are read at scrape time.
func (dm *Daemon) watchMetrics() {
	if hr, ok := dm.d.Store.(store.HealthReporter); ok {
		h := hr.WatchHealth()
		dm.m.SetStore(func() (bool, uint64) { return h.Up(), h.Restarts() })
	}
	dm.m.SetDataPath(func() *metrics.DataPath {
		box := dm.dataPath.Load()
		if box == nil || box.s == nil {
			return nil
		}
		encap, s := box.s.DataPathStats()
		return &metrics.DataPath{Encap: encap, RxPackets: s.RxPackets.Load(), TxPackets: s.TxPackets.Load(),
			RxBytes: s.RxBytes.Load(), TxBytes: s.TxBytes.Load(), Drops: s.DropsByReason()}
	})
}

// dataPathBox holds the backend for the scrapes (nil: none yet).
type dataPathBox struct{ s dataPathStats }

// publishBackend makes dm.be's userspace counters visible to the scrapes.
func (dm *Daemon) publishBackend() {
	s, _ := dm.be.(dataPathStats)
	dm.dataPath.Store(&dataPathBox{s: s})
}
