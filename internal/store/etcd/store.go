// Package etcd is the lease store on etcd v3, in flannel's keyspace so that
// flannel and weft nodes sharing one etcd see each other's leases:
//
//	<prefix>/config                      net-conf.json text
//	<prefix>/subnets/10.5.34.0-24        {"PublicIP":"192.168.10.4","PublicIPv6":null,"BackendType":"vxlan",...}
//	<prefix>/subnets/10.5.34.0-24&fd00:5:34::-64
//
// A lease key is attached to an etcd lease of TTL (24 h); a key with no etcd
// lease is a reservation and is written back without one.
//
// Design notes. A new lease is created by a transaction that succeeds only if
// its key does not exist and no key under subnets/ changed since the list the
// choice was made from; a lost race re-lists and tries again. The second
// condition is what keeps two nodes with the same PublicIP from both
// creating a lease: the loser sees the winner's lease on its re-list and
// takes that one over. Renewal grants a fresh etcd lease, moves the key to it
// in a transaction guarded by the key's ModRevision, and revokes the old
// etcd lease. The watcher keeps the set of leases it has sent (a
// store.Tracker): it resumes after the last revision it saw, and after a
// compaction re-lists and sends the difference.
//
// An etcd restarted from an empty data directory, or restored from an old
// snapshot, is not a compaction: the client resumes the watch at a revision
// the new history has not reached, so the watch waits in silence while every
// lease, ours included, is gone. Every ResetCheckEvery the watcher asks etcd
// (reset.go) for its cluster ID, its revision and the creation revision of
// <prefix>/config; a new cluster ID, a revision below one already seen, or a
// config key created anew mean a reset. The watcher then re-lists and sends
// the leases that vanished as lease.Lost, not lease.Removed, each with the
// time it would have expired (learnt from etcd's TimeToLive while the lease
// existed; else the reset time plus TTL, the longest it could have lived):
// their nodes may be alive and write them again, and the daemon keeps their
// routes until then.
package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/store"
)

// Defaults of Options.
const (
	DefaultPrefix = "/coreos.com/network"
	DefaultTTL    = 24 * time.Hour
	// DefaultResetCheck is how often a watch checks for a reset etcd.
	DefaultResetCheck = 5 * time.Second
	// DefaultKeepAlive is the client's ping interval and answer timeout: a
	// connection that silently stopped carrying packets is dropped and
	// dialled again within 20 s.
	DefaultKeepAlive = 10 * time.Second
)

// reconnectMax bounds the wait between two attempts to reach a lost etcd.
const reconnectMax = 500 * time.Millisecond

// DefaultEndpoints are flanneld's default --etcd-endpoints.
func DefaultEndpoints() []string {
	return []string{"http://127.0.0.1:4001", "http://127.0.0.1:2379"}
}

// Options configure the store. Never log an Options value: it holds the
// password (LogValue leaves it out).
type Options struct {
	Endpoints []string // default DefaultEndpoints()
	Prefix    string   // default DefaultPrefix
	// KeyFile and CertFile enable TLS client authentication; CAFile alone
	// enables TLS with that CA.
	KeyFile, CertFile, CAFile string
	Username, Password        string
	// TTL of a lease; default DefaultTTL.
	TTL time.Duration
	// DialTimeout bounds connecting; default 5 s.
	DialTimeout time.Duration
	// ResetCheckEvery is how often a lease watch asks etcd whether it was
	// reset (reset.go); default DefaultResetCheck.
	ResetCheckEvery time.Duration
	// KeepAlive is how often the client pings etcd on an idle connection
	// (gRPC pings every 10 s at the most often), and how long it waits for
	// the answer before it drops the connection and dials again; default
	// DefaultKeepAlive. Without it, a connection
	// whose packets are silently dropped (a firewall, a host gone without
	// a reset) would hold the lease watch forever, delivering nothing.
	KeepAlive time.Duration
	// Logger defaults to a discarding logger; Rand to a randomly seeded
	// generator; Now to time.Now.
	Logger *slog.Logger
	Rand   *rand.Rand
	Now    func() time.Time
}

// LogValue shows the options without the password.
func (o Options) LogValue() slog.Value {
	return slog.GroupValue(slog.Any("endpoints", o.Endpoints), slog.String("prefix", o.Prefix),
		slog.String("keyfile", o.KeyFile), slog.String("certfile", o.CertFile), slog.String("cafile", o.CAFile),
		slog.String("username", o.Username), slog.Bool("password", o.Password != ""))
}

// Store is the etcd lease store.
type Store struct {
	cli    *clientv3.Client
	prefix string
	ttl    time.Duration
	now    func() time.Time
	// resetCheck is the period of a watch's reset check (reset.go).
	resetCheck time.Duration
	log        *slog.Logger
	bad        *store.BadKeys
	health     store.WatchHealth

	mu  sync.Mutex // guards rnd and cfg
	rnd *rand.Rand
	cfg *config.NetConf // last config read, for checking leases
}

var _ store.Store = (*Store)(nil)

// New connects to etcd. It does not wait for the cluster to answer.
func New(opts Options) (*Store, error) {
	if len(opts.Endpoints) == 0 {
		opts.Endpoints = DefaultEndpoints()
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.TTL <= 0 {
		opts.TTL = DefaultTTL
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 5 * time.Second
	}
	if opts.ResetCheckEvery <= 0 {
		opts.ResetCheckEvery = DefaultResetCheck
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Rand == nil {
		opts.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.KeepAlive <= 0 {
		opts.KeepAlive = DefaultKeepAlive
	}
	tlsCfg, err := tlsConfig(opts)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   opts.Endpoints,
		DialTimeout: opts.DialTimeout,
		TLS:         tlsCfg,
		Username:    opts.Username,
		Password:    opts.Password,
		Logger:      zap.NewNop(),
		// etcd's servers accept a ping every 5 s at most
		// (--grpc-keepalive-min-time), and only while a stream is open
		// (the lease watch always is).
		DialKeepAliveTime:    opts.KeepAlive,
		DialKeepAliveTimeout: opts.KeepAlive,
		// gRPC's default reconnect backoff grows to 2 minutes: after an
		// outage of 30 s a node took 5 to 9 s to see etcd again, and a
		// lease written meanwhile as long to reach it. Redial at least
		// every reconnectMax instead; a dial to a dead etcd is one
		// refused connection.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: reconnectMax},
			MinConnectTimeout: opts.DialTimeout,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s: %w", strings.Join(opts.Endpoints, ","), err)
	}
	log := opts.Logger.With("component", "etcd-store")
	s := &Store{cli: cli, prefix: strings.TrimSuffix(opts.Prefix, "/"), ttl: opts.TTL, now: opts.Now,
		resetCheck: opts.ResetCheckEvery, log: log, bad: store.NewBadKeys(log), rnd: opts.Rand}
	s.health.SetProbe(func() bool { // a watch waiting on a lost connection is not up
		st := cli.ActiveConnection().GetState()
		return st == connectivity.Ready || st == connectivity.Idle
	})
	return s, nil
}

func tlsConfig(opts Options) (*tls.Config, error) {
	if opts.KeyFile == "" && opts.CertFile == "" && opts.CAFile == "" {
		return nil, nil
	}
	if (opts.KeyFile == "") != (opts.CertFile == "") {
		return nil, errors.New("etcd TLS: give both the key file and the certificate file, or neither")
	}
	info := transport.TLSInfo{CertFile: opts.CertFile, KeyFile: opts.KeyFile, TrustedCAFile: opts.CAFile}
	cfg, err := info.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("etcd TLS: %w", err)
	}
	return cfg, nil
}

// Close closes the connection.
func (s *Store) Close() error { return s.cli.Close() }

func (s *Store) configKey() string  { return s.prefix + "/config" }
func (s *Store) subnetsKey() string { return s.prefix + "/subnets/" }
func (s *Store) leaseKey(l lease.Lease) string {
	return s.subnetsKey() + l.Key()
}

// NetworkConfig reads and parses <prefix>/config.
func (s *Store) NetworkConfig(ctx context.Context) (*config.NetConf, error) {
	resp, err := s.cli.Get(ctx, s.configKey())
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", s.configKey(), err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%s: %w", s.configKey(), store.ErrNoConfig)
	}
	cfg, warnings, err := config.ParseNetConf(resp.Kvs[0].Value)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.configKey(), err)
	}
	for _, w := range warnings {
		s.log.Warn("network config", "key", s.configKey(), "warning", w)
	}
	s.mu.Lock()
	s.cfg = cfg
	s.mu.Unlock()
	return cfg, nil
}

// checkConfig returns the config to check leases against, reading it once.
// A store without a config checks keys and values only.
func (s *Store) checkConfig(ctx context.Context) (*config.NetConf, error) {
	s.mu.Lock()
	cfg := s.cfg
	s.mu.Unlock()
	if cfg != nil {
		return cfg, nil
	}
	cfg, err := s.NetworkConfig(ctx)
	if errors.Is(err, store.ErrNoConfig) {
		return nil, nil
	}
	return cfg, err
}

// entry is one key under subnets/ as read from etcd.
type entry struct {
	lease   lease.Lease
	valid   bool
	leaseID clientv3.LeaseID
	modRev  int64
}

// decode turns a key-value into an entry; invalid ones are logged once.
func (s *Store) decode(cfg *config.NetConf, key string, value []byte, leaseID int64, modRev int64) entry {
	name := strings.TrimPrefix(key, s.subnetsKey())
	l, err := store.Decode(cfg, name, value, leaseID == 0)
	if err != nil {
		s.bad.Skip(key, err)
		return entry{modRev: modRev}
	}
	s.bad.Clear(key)
	return entry{lease: l, valid: true, leaseID: clientv3.LeaseID(leaseID), modRev: modRev}
}

// ListLeases returns the valid leases under <prefix>/subnets/.
func (s *Store) ListLeases(ctx context.Context) (store.Snapshot, error) {
	snap, _, err := s.list(ctx)
	return snap, err
}

// list is ListLeases that also returns the etcd lease of each listed key
// (by lease key name; absent for reservations).
func (s *Store) list(ctx context.Context) (store.Snapshot, map[string]clientv3.LeaseID, error) {
	cfg, err := s.checkConfig(ctx)
	if err != nil {
		return store.Snapshot{}, nil, err
	}
	resp, err := s.cli.Get(ctx, s.subnetsKey(), clientv3.WithPrefix())
	if err != nil {
		return store.Snapshot{}, nil, fmt.Errorf("list %s: %w", s.subnetsKey(), err)
	}
	snap := store.Snapshot{Revision: resp.Header.Revision, Leases: make([]lease.Lease, 0, len(resp.Kvs))}
	ids := make(map[string]clientv3.LeaseID, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if e := s.decode(cfg, string(kv.Key), kv.Value, kv.Lease, kv.ModRevision); e.valid {
			snap.Leases = append(snap.Leases, e.lease)
			if e.leaseID != 0 {
				ids[e.lease.Key()] = e.leaseID
			}
		}
	}
	return snap, ids, nil
}
