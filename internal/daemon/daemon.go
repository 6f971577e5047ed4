//go:build linux

// Package daemon is weftd: it takes a lease from the store, sets up the
// backend, masquerade rules and subnet.env, and keeps the kernel reconciled to
// the leases of every other node until it is stopped.
//
// Design notes:
//   - Lease events, netlink deletion notices and a slow timer only change the
//     reconciler's desired state or its view of the kernel; one loop applies
//     the difference. A deleted route, neighbour or FDB entry is restored by
//     the next Apply; a deleted vxlan device is recreated and every peer
//     replayed (flannel leaves such a node cut off).
//   - Start-up does a full Sync: routes of leases that vanished while weftd
//     was down are removed before the node is declared ready.
//   - A store reset (etcd restarted from an empty data directory) loses
//     every lease without deleting any: the store sends them as
//     lease.Lost, and the peers keep their routes until their leases would
//     have expired, unless written again first (lost.go); KeepLease waits
//     for the network configuration and writes the own lease again with
//     the same subnet.
//   - SIGTERM (ctx cancelled) leaves routes, devices, neighbours, FDB
//     entries, rules and the lease in place, so pods keep talking while the
//     daemon restarts; the next start adopts them.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/kernel"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/metrics"
	"github.com/weft-net/weft/internal/netfilter"
	"github.com/weft-net/weft/internal/netlinkx"
	"github.com/weft-net/weft/internal/reconcile"
	"github.com/weft-net/weft/internal/store"
	"github.com/weft-net/weft/internal/subnetfile"
	"github.com/weft-net/weft/internal/version"
)

// Rules is the masquerade and forward rule manager (netfilter.Manager).
type Rules interface {
	// Set installs the rules for cfg (idempotent).
	Set(ctx context.Context, cfg netfilter.Config) error
	// Run re-checks and restores the rules until ctx ends.
	Run(ctx context.Context) error
}

// Deps are the daemon's collaborators.
type Deps struct {
	Logger   *slog.Logger
	Store    store.Store
	Backends backend.Registry
	// NewRules builds the rule manager once the configuration is known
	// (iptables or nftables); nil for none. It is used when --ip-masq or
	// --iptables-forward-rules asks for rules.
	NewRules func(nc *config.NetConf) (Rules, error)
	// ResyncEvery is the period of the full kernel check; 0 means 30 s.
	ResyncEvery time.Duration
	// Ready, when set, is called once the node is up (subnet.env written).
	Ready func(own lease.Lease)
	// Kernel, when set, is the kernel to program (a test's namespace, or
	// kerneltest's fake); otherwise the daemon opens a netlink handle in
	// its own namespace.
	Kernel kernel.Kernel
	// Metrics are served at /metrics on the health server; nil means the
	// daemon makes its own.
	Metrics *metrics.Metrics
}

// Daemon is one run of weftd.
type Daemon struct {
	o   config.Options
	d   Deps
	log *slog.Logger
	// wg holds every goroutine the run starts (health server, netlink
	// monitor, lease watch, lease keeper, rules); Run waits for it.
	wg sync.WaitGroup

	nl     kernel.Kernel
	nc     *config.NetConf
	be     backend.Backend
	rec    *reconcile.Reconciler
	rules  Rules
	own    lease.Lease
	peers  map[string]lease.Lease
	bad    map[string]string // peers skipped, with the reason logged
	health health
	m      *metrics.Metrics
	minute minuteSummary // for the once-a-minute summary line
	// dataPath publishes the backend to the metrics' scrapes, which run on
	// the health server's goroutines (dm.be is the loop's).
	dataPath atomic.Pointer[dataPathBox]
	retry    *time.Timer
	started  time.Time
	ext      backend.External
	// list is the start-up list of a store.StreamLister, started as soon
	// as the own lease is known (loop.go); nil otherwise.
	list *streamedList
	// lost holds the peers whose leases a store reset lost, kept until
	// they would have expired (lost.go).
	lost lostPeers

	// The peer snapshot (snapshot.go): written snapshotDelay after a
	// change, and at least every snapshotRefresh.
	snapTimer   *time.Timer
	snapDirty   bool
	snapWritten time.Time
}

// Run runs the daemon until ctx ends (nil: a clean stop that leaves the data
// plane in place) or something it cannot recover from happens.
func Run(ctx context.Context, o config.Options, d Deps) error {
	if d.ResyncEvery <= 0 {
		d.ResyncEvery = 30 * time.Second
	}
	dm := &Daemon{o: o, d: d, log: d.Logger, peers: map[string]lease.Lease{}, bad: map[string]string{}}
	dm.health.setReason("starting")
	if dm.m = d.Metrics; dm.m == nil {
		dm.m = metrics.New(version.Release)
	}
	dm.health.metrics = dm.m.Handler()
	dm.watchMetrics()
	dm.retry = time.NewTimer(time.Hour)
	dm.retry.Stop()
	dm.snapTimer = time.NewTimer(time.Hour)
	dm.snapTimer.Stop()
	dm.lost = newLostPeers()
	// Everything started below ends with ctx: Run cancels it on the way
	// out, waits for its goroutines and closes the backend, so that a
	// failed start leaves no health server answering and a return leaves
	// nothing running.
	ctx, cancel := context.WithCancel(ctx)
	defer dm.closeBackend()
	defer dm.wg.Wait()
	defer cancel()
	if o.HealthzPort > 0 {
		addr, err := dm.health.serve(ctx, o.HealthzIP, o.HealthzPort, &dm.wg)
		if err != nil {
			return err
		}
		dm.log.Info("health server listening", "addr", addr.String())
	}
	dm.started = time.Now()
	if err := dm.start(ctx); err != nil {
		return err
	}
	return dm.loop(ctx)
}

// closeBackend stops a backend's userspace data path (udp), if it has one;
// its kernel state stays.
func (dm *Daemon) closeBackend() {
	if c, ok := dm.be.(io.Closer); ok {
		if err := c.Close(); err != nil {
			dm.log.Warn("stop the backend", "err", err)
		}
	}
}

func (dm *Daemon) start(ctx context.Context) error {
	var err error
	if dm.nl = dm.d.Kernel; dm.nl == nil {
		h, err := netlinkx.New()
		if err != nil {
			return err
		}
		dm.nl = h
	}
	warm := dm.warmStart(ctx)
	if warm, err = dm.setupBackend(ctx, warm); err != nil {
		return err
	}
	dm.health.setReason("acquiring a lease")
	warmOwn := dm.own.Key()
	if err := dm.acquire(ctx); err != nil {
		return err
	}
	// The list's first Nodes take the API server tens of milliseconds to
	// send: request them now, while the device, the rules and the kernel
	// dump are done.
	if sl, ok := dm.d.Store.(store.StreamLister); ok {
		dm.list = dm.startList(ctx, sl)
	}
	if err := dm.be.Ensure(ctx, dm.own); err != nil {
		return fmt.Errorf("set up the %s device: %w", dm.nc.Backend.Type, err)
	}
	if dm.rec == nil {
		dm.rec = reconcile.New(dm.nl, dm.log.With("component", "reconciler"))
	}
	dm.rec.SetDevices(dm.be.Devices())
	dm.rec.SetScope(dm.scope())
	if warm && dm.own.Key() != warmOwn {
		dm.log.Warn("own lease differs from the peer snapshot's; reconfiguring", "snapshot", warmOwn, "lease", dm.own.Key())
		dm.removePeer(dm.own.Key())
		dm.replayPeers()
	}
	dm.setNodeObjects() // written by the first sync
	if dm.d.NewRules != nil && (dm.o.IPMasq || dm.o.IPTablesForwardRules) {
		if dm.rules, err = dm.d.NewRules(dm.nc); err != nil {
			return fmt.Errorf("masquerade rules: %w", err)
		}
		if err := dm.rules.Set(ctx, dm.rulesConfig()); err != nil {
			return fmt.Errorf("masquerade rules: %w", err)
		}
	}
	if err := dm.writeSubnetFile(); err != nil {
		return err
	}
	return nil
}

// setupBackend reads the store's network configuration and builds the
// backend for it, keeping the one a warm start resumed when the
// configuration is the snapshot's. It reports whether the warm start stands.
func (dm *Daemon) setupBackend(ctx context.Context, warm bool) (bool, error) {
	nc, err := dm.networkConfig(ctx)
	if err != nil {
		return false, err
	}
	if warm && *nc != *dm.nc {
		dm.log.Info("the network configuration changed since the peer snapshot; starting the backend afresh")
		dm.dropWarm()
		warm = false
	}
	dm.nc = nc
	if warm, err = dm.external(ctx, warm); err != nil {
		return false, err
	}
	ext := dm.ext
	if dm.be == nil {
		if dm.be, err = dm.d.Backends.New(backend.Deps{Net: dm.nc, External: ext, Kernel: dm.nl,
			Logger: dm.log.With("backend", dm.nc.Backend.Type), Options: &dm.o}); err != nil {
			return false, err
		}
		dm.publishBackend()
	}
	if !dm.snapshots() {
		dm.removeSnapshot()
	}
	return warm, nil
}

// networkConfig reads the configuration from the store, retrying with
// backoff while the store is unreachable or has none, and checks its
// Backend section against the backends of this build.
func (dm *Daemon) networkConfig(ctx context.Context) (*config.NetConf, error) {
	wait := 200 * time.Millisecond
	for {
		nc, err := dm.d.Store.NetworkConfig(ctx)
		if err == nil {
			warnings, err := nc.ConfigureBackend(dm.d.Backends)
			if err != nil {
				return nil, err
			}
			for _, w := range warnings {
				dm.log.Warn("network config", "warning", w)
			}
			return nc, nil
		}
		if errors.Is(err, config.ErrNetConf) {
			return nil, err // a bad config does not get better by waiting
		}
		dm.health.setReason("no network configuration: " + err.Error())
		dm.log.Warn("waiting for the network configuration", "err", err, "retry-in", wait)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Second)
	}
}

func (dm *Daemon) acquire(ctx context.Context) error {
	attrs, err := dm.be.Attrs(ctx)
	if err != nil {
		return fmt.Errorf("backend attributes: %w", err)
	}
	req := store.AcquireRequest{Config: dm.nc, Attrs: attrs}
	if prev, err := subnetfile.Read(dm.o.SubnetFile); err == nil {
		if prev.Subnet.IsValid() {
			req.Previous = prev.Subnet.Masked()
		}
		if prev.IPv6Subnet.IsValid() {
			req.PreviousIPv6 = prev.IPv6Subnet.Masked()
		}
	}
	// store.ErrNotYet (kube: no podCIDR yet) is retried at once: the store
	// waits on a watch between such errors, and the node must come up the
	// moment it can. Other errors back off; /readyz shows the reason.
	const notYetRetry = 200 * time.Millisecond
	wait, lastReason := 200*time.Millisecond, ""
	for {
		own, err := dm.d.Store.AcquireLease(ctx, req)
		if err == nil {
			dm.own = own
			dm.ownLease(own)
			return nil
		}
		if errors.Is(err, store.ErrNoFreeSubnet) || errors.Is(err, config.ErrNetConf) || ctx.Err() != nil {
			return fmt.Errorf("acquire a lease: %w", err)
		}
		dm.health.setReason("acquiring a lease: " + err.Error())
		pause := wait + rand.N(wait/2)
		if errors.Is(err, store.ErrNotYet) {
			pause = notYetRetry
			if err.Error() != lastReason {
				dm.log.Info("waiting to acquire a lease", "reason", err.Error())
			}
		} else {
			dm.log.Warn("acquire a lease", "err", err, "retry-in", pause)
			wait = min(2*wait, 10*time.Second)
		}
		lastReason = err.Error()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
	}
}

func (dm *Daemon) networks() []netip.Prefix {
	var out []netip.Prefix
	for _, f := range dm.nc.Families() {
		out = append(out, f.Network)
	}
	return out
}

func (dm *Daemon) ownSubnets() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []netip.Prefix{dm.own.Subnet, dm.own.IPv6Subnet} {
		if s.IsValid() {
			out = append(out, s)
		}
	}
	return out
}

// rulesConfig is the desired masquerade and forward rules.
func (dm *Daemon) rulesConfig() netfilter.Config {
	cfg := netfilter.Config{Masquerade: dm.o.IPMasq, Forward: dm.o.IPTablesForwardRules,
		FullyRandomDisable: dm.o.IPMasqFullyRandomDisable}
	for _, f := range []struct {
		fam config.Family
		own netip.Prefix
	}{{dm.nc.IPv4, dm.own.Subnet}, {dm.nc.IPv6, dm.own.IPv6Subnet}} {
		if f.fam.Enabled && f.own.IsValid() {
			cfg.Networks = append(cfg.Networks, netfilter.Network{Cluster: f.fam.Network, Subnet: f.own.Masked()})
		}
	}
	return cfg
}

func (dm *Daemon) scope() reconcile.Scope {
	return reconcile.Scope{Networks: dm.networks(), Own: dm.ownSubnets(), Links: dm.be.Links()}
}

// nodeObjects is the reconciler's key for the node's own kernel objects
// (no lease key starts with a NUL).
const nodeObjects = "\x00node"

// setNodeObjects gives the reconciler the node's own objects, as desired
// state like a peer's, repaired when someone deletes them: the
// --ip-blackhole-route route of each own subnet (moved when the own lease
// changes) and the backend's own routes (backend.NodeRouter: udp's
// <Network> dev flannel0, following the device when it is recreated).
func (dm *Daemon) setNodeObjects() {
	var objs reconcile.Objects
	if nr, ok := dm.be.(backend.NodeRouter); ok {
		objs.Routes = append(objs.Routes, nr.NodeRoutes()...)
	}
	if dm.o.IPBlackholeRoute {
		for _, s := range dm.ownSubnets() {
			objs.Routes = append(objs.Routes, kernel.Route{Dst: s.Masked(), Blackhole: true})
		}
	}
	if objs.Len() == 0 {
		dm.rec.RemovePeer(nodeObjects)
		return
	}
	dm.rec.SetPeer(nodeObjects, objs)
}

func (dm *Daemon) writeSubnetFile() error {
	e := subnetfile.Env{MTU: dm.be.MTU(), IPMasq: dm.o.IPMasq}
	if s := dm.own.Subnet; s.IsValid() {
		e.Networks = []netip.Prefix{dm.nc.IPv4.Network}
		e.Subnet = netip.PrefixFrom(s.Masked().Addr().Next(), s.Bits())
	}
	if s := dm.own.IPv6Subnet; s.IsValid() {
		e.IPv6Networks = []netip.Prefix{dm.nc.IPv6.Network}
		e.IPv6Subnet = netip.PrefixFrom(s.Masked().Addr().Next(), s.Bits())
	}
	if err := subnetfile.Write(dm.o.SubnetFile, e); err != nil {
		return fmt.Errorf("write subnet file: %w", err)
	}
	return nil
}
