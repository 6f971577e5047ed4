// Package store defines the lease store the daemon uses to agree with the
// other nodes on who owns which subnet, and the parts of the lease logic every
// store shares: which lease a node may take, decoding and checking what other
// writers put into the store, turning lists into change events, and keeping
// the node's own lease alive (KeepLease).
//
// Implementations live in sub-packages: etcd/ (flannel's etcd v3 keyspace)
// and kube/ (Node annotations). storetest/ holds an in-memory fake and
// the conformance suite every implementation passes.
package store

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/lease"
)

// Sentinel errors; implementations wrap them with %w.
var (
	// ErrNoConfig means the store holds no network configuration.
	ErrNoConfig = errors.New("no network configuration in the store")
	// ErrNoFreeSubnet means every subnet of the pool is taken.
	ErrNoFreeSubnet = errors.New("out of subnets")
	// ErrLeaseNotFound means the lease to renew is gone or now carries
	// another node's identity; the caller should acquire again.
	ErrLeaseNotFound = errors.New("lease not found")
	// ErrBadLease is wrapped by Decode errors: a key or value another writer
	// put into the store that is not a valid lease of this network.
	ErrBadLease = errors.New("bad lease in store")
)

// Store is a lease store. Methods are safe for concurrent use. A Store holds
// no backend-specific knowledge: backends keep what they need in
// lease.Attrs.BackendData.
type Store interface {
	// NetworkConfig returns the cluster network configuration, parsed and
	// validated; ErrNoConfig when there is none.
	NetworkConfig(ctx context.Context) (*config.NetConf, error)

	// AcquireLease returns a lease for this node, creating it when needed,
	// with req.Attrs published. The order is: an existing lease carrying the
	// node's public address that still fits req.Config (a reservation stays a
	// reservation); else req.Previous's subnets when free; else random free
	// subnets of the pool. Two nodes never get overlapping subnets, and two
	// calls with the same public address end with one lease. When the pool
	// is full the error wraps ErrNoFreeSubnet and names the network and the
	// number of subnets taken.
	AcquireLease(ctx context.Context, req AcquireRequest) (lease.Lease, error)

	// RenewLease extends l's lifetime and republishes l.Attrs; it returns the
	// lease with its new Expiration. A reservation is left without expiry.
	// ErrLeaseNotFound when the lease is gone or taken over by another node.
	RenewLease(ctx context.Context, l lease.Lease) (lease.Lease, error)

	// ListLeases returns every valid lease and the revision the list is at.
	// Invalid entries from other writers are skipped and logged once per key.
	ListLeases(ctx context.Context) (Snapshot, error)

	// WatchLeases sends to out, in store order, every change after from:
	// from.Leases must be the leases at from.Revision (a ListLeases result).
	// A zero Snapshot first sends every current lease as Added. It survives
	// disconnects (resuming after the last revision it saw) and history
	// compaction (re-listing and sending the difference from what it had
	// sent), so no change is lost and none is sent twice; an update that
	// changes nothing is not sent. A store that notices it was reset (etcd
	// restarted from an empty data directory) re-lists and sends the
	// leases that vanished as lease.Lost, with the time each would have
	// expired, rather than lease.Removed. It returns only when ctx ends
	// (with ctx.Err()) or on an error it cannot recover from. Batches are
	// never empty.
	WatchLeases(ctx context.Context, from Snapshot, out chan<- []lease.Event) error
}

// StreamLister is implemented by stores whose list is long enough to be
// worth overlapping with the kernel writes it leads to (the Kubernetes store
// reads thousands of Node objects). The daemon programs each part while
// the next is read.
type StreamLister interface {
	// ListLeasesStream is ListLeases, and also calls part with the leases
	// in batches as they are read, before it returns them all. part runs on
	// ListLeasesStream's goroutine, so it may block to pace the list. When
	// an attempt fails and the store lists again, part sees leases again,
	// and may have seen leases the final Snapshot lacks: the Snapshot is
	// what holds.
	ListLeasesStream(ctx context.Context, part func([]lease.Lease)) (Snapshot, error)
}

// AcquireRequest is what a node asks for.
type AcquireRequest struct {
	// Config is the network configuration to allocate in.
	Config *config.NetConf
	// Attrs is the value to publish. Its PublicIP (PublicIPv6 on an
	// IPv6-only network) identifies the node.
	Attrs lease.Attrs
	// Previous holds the subnets the node had before (from subnet.env); the
	// zero Prefix when unknown.
	Previous, PreviousIPv6 netip.Prefix
}

// Snapshot is the set of leases at a revision.
type Snapshot struct {
	Leases []lease.Lease
	// Revision orders the store's history (etcd: the cluster revision;
	// Kubernetes: the list's resourceVersion). 0 means none.
	Revision int64
}

// Closer is implemented by stores that hold connections.
type Closer interface {
	Close() error
}

// WatchHealth is a store's lease watch as metrics see it: up while the watch
// runs, and how often it was interrupted and resumed. Safe for concurrent
// use; reading it takes no lock.
type WatchHealth struct {
	up       atomic.Bool
	restarts atomic.Uint64
	probe    func() bool
}

// SetProbe adds a check of the store's connection to Up (etcd: the client
// retries a lost connection inside the watch, which sees nothing until it
// is back). It must be set before the health is shared.
func (h *WatchHealth) SetProbe(probe func() bool) { h.probe = probe }

// Up reports whether the watch is running (and the probe, if any, agrees).
func (h *WatchHealth) Up() bool { return h.up.Load() && (h.probe == nil || h.probe()) }

// Restarts is how often the watch was interrupted.
func (h *WatchHealth) Restarts() uint64 { return h.restarts.Load() }

// Running records that the watch delivers again.
func (h *WatchHealth) Running() { h.up.Store(true) }

// Interrupted records that the watch failed and is being resumed.
func (h *WatchHealth) Interrupted() {
	h.up.Store(false)
	h.restarts.Add(1)
}

// HealthReporter is an optional capability of a Store that reports its
// lease watch's health (weft_store_up, weft_store_watch_restarts_total).
type HealthReporter interface {
	WatchHealth() *WatchHealth
}

// ExpiryReader is an optional capability of a Store whose leases expire:
// Expiry asks the store when l was last granted or renewed and when it
// expires (weft status). A lease without expiry (a reservation, a Node's
// podCIDR) returns zero times.
type ExpiryReader interface {
	Expiry(ctx context.Context, l lease.Lease) (renewed, expires time.Time, err error)
}
