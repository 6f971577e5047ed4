package kube

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/store"
)

// DefaultPrefix is flannel's annotation prefix (--kube-annotation-prefix).
const DefaultPrefix = "flannel.alpha.coreos.com"

// Options configure a Store.
type Options struct {
	// API is the API client (Connect builds one); required.
	API API
	// NodeName names this node (NODE_NAME); when empty, the node is the
	// spec.nodeName of pod PodNamespace/PodName.
	NodeName, PodName, PodNamespace string
	// Prefix is the annotation prefix; "" means DefaultPrefix.
	Prefix string
	// NetConf is the network configuration (ReadNetConf's result). When nil,
	// NetworkConfig reads NetConfPath at every call.
	NetConf     *config.NetConf
	NetConfPath string
	// SetNodeNetworkUnavailable makes MarkUp set the Node's
	// NetworkUnavailable condition to False (--set-node-network-unavailable).
	SetNodeNetworkUnavailable bool
	// Logger defaults to a discarding logger.
	Logger *slog.Logger
	// PageSize is how many Nodes one list request asks for; 0 means 500,
	// client-go's reflector's page. (An API server answering a list at
	// resourceVersion "0" from its cache may send them all at once.)
	PageSize int64
	// RetryMin and RetryMax bound the backoff after API errors; 0 means
	// 500 ms and 30 s.
	RetryMin, RetryMax time.Duration
	// NotYetWait is how long AcquireLease waits, watching the node, for a
	// podCIDR before it returns ErrNotYet; 0 means 10 s.
	NotYetWait time.Duration
}

// Store is the Kubernetes lease store. It is safe for concurrent use.
type Store struct {
	o   Options
	k   keys
	log *slog.Logger
	bad *store.BadKeys
	// health is the node watch's, for metrics (store.HealthReporter).
	health store.WatchHealth
	warn   onceSet

	mu       sync.Mutex
	nodeName string          // resolved node name; guarded by mu
	waited   bool            // a podCIDR was found missing once; guarded by mu
	cfg      *config.NetConf // the config of the last AcquireLease; guarded by mu
}

var (
	_ store.Store        = (*Store)(nil)
	_ store.Readier      = (*Store)(nil)
	_ store.StreamLister = (*Store)(nil)
)

// New returns a store; it does no I/O.
func New(o Options) (*Store, error) {
	if o.API == nil {
		return nil, errors.New("kube store: no API client")
	}
	if o.NodeName == "" && (o.PodName == "" || o.PodNamespace == "") {
		return nil, errors.New("kube store: NODE_NAME, or POD_NAME and POD_NAMESPACE, must name the node")
	}
	if o.NetConf == nil && o.NetConfPath == "" {
		return nil, errors.New("kube store: no network configuration and no --net-config-path")
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.PageSize <= 0 {
		o.PageSize = 500
	}
	if o.RetryMin <= 0 {
		o.RetryMin = 500 * time.Millisecond
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 30 * time.Second
	}
	if o.NotYetWait <= 0 {
		o.NotYetWait = 10 * time.Second
	}
	log := o.Logger.With("component", "kube-store")
	return &Store{o: o, k: newKeys(o.Prefix), log: log, bad: store.NewBadKeys(log), warn: onceSet{seen: map[string]bool{}},
		nodeName: o.NodeName}, nil
}

// ReadNetConf reads and validates net-conf.json at path (--net-config-path),
// logging its warnings. A missing file's error wraps store.ErrNoConfig, a
// bad one's config.ErrNetConf.
func ReadNetConf(path string, log *slog.Logger) (*config.NetConf, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read --net-config-path: %w (%w)", err, store.ErrNoConfig)
	}
	if err != nil {
		return nil, fmt.Errorf("read --net-config-path: %w", err)
	}
	nc, warnings, err := config.ParseNetConf(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, w := range warnings {
		log.Warn(w, "file", path)
	}
	return nc, nil
}

// NetworkConfig returns Options.NetConf, or reads Options.NetConfPath.
func (s *Store) NetworkConfig(context.Context) (*config.NetConf, error) {
	if s.o.NetConf != nil {
		return s.o.NetConf, nil
	}
	return ReadNetConf(s.o.NetConfPath, s.log)
}

// node returns this node's name: NODE_NAME, or the spec.nodeName of pod
// POD_NAMESPACE/POD_NAME (looked up once).
func (s *Store) node(ctx context.Context) (string, error) {
	s.mu.Lock()
	name := s.nodeName
	s.mu.Unlock()
	if name != "" {
		return name, nil
	}
	pod, err := s.o.API.GetPod(ctx, s.o.PodNamespace, s.o.PodName)
	if err != nil {
		return "", fmt.Errorf("find this node: get pod %s/%s: %w", s.o.PodNamespace, s.o.PodName, err)
	}
	if pod.Spec.NodeName == "" {
		return "", fmt.Errorf("find this node: pod %s/%s has no spec.nodeName", s.o.PodNamespace, s.o.PodName)
	}
	s.mu.Lock()
	s.nodeName = pod.Spec.NodeName
	s.mu.Unlock()
	s.log.Info("this node", "node", pod.Spec.NodeName, "pod", s.o.PodNamespace+"/"+s.o.PodName)
	return pod.Spec.NodeName, nil
}

// config returns the configuration leases are read with: the last
// AcquireLease's, else NetworkConfig's.
func (s *Store) config(ctx context.Context) (*config.NetConf, error) {
	s.mu.Lock()
	cfg := s.cfg
	s.mu.Unlock()
	if cfg != nil {
		return cfg, nil
	}
	return s.NetworkConfig(ctx)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// onceSet logs a message once per key.
type onceSet struct {
	mu   sync.Mutex
	seen map[string]bool // guarded by mu
}

// first reports whether key is new.
func (o *onceSet) first(key string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.seen[key] {
		return false
	}
	o.seen[key] = true
	return true
}
