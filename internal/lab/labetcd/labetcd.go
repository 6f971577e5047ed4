// Package labetcd runs etcd in-process: a single member or an N-member
// cluster on loopback, with free ports and data directories under a directory
// the caller gives. The lab and the store tests use it instead of an external
// etcd; the fault tests stop and restart members through it.
//
// Ports are chosen by binding 127.0.0.1:0 and releasing the port just before
// etcd binds it, so two test processes get different ports; a member keeps its
// ports across Stop and Restart so its peers find it again.
package labetcd

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// ErrStopped is returned by member operations on a member that is not running.
var ErrStopped = errors.New("etcd member is stopped")

// Options configure a cluster.
type Options struct {
	// Dir holds one data directory per member. It must exist.
	Dir string
	// Members is the number of members; 0 means 1.
	Members int
	// Logger receives start and stop messages; nil discards them. etcd's own
	// logs are discarded unless Verbose is set.
	Logger *slog.Logger
	// Verbose passes etcd's own warnings and errors to stderr.
	Verbose bool
	// ReadyTimeout bounds how long Start and Restart wait for the members to
	// serve; 0 means 30 s.
	ReadyTimeout time.Duration
	// Host, when set, is the address members listen on instead of loopback,
	// with fixed ports from 2379 (client) and 2380 (peer) upwards: the lab
	// runs etcd on its switch's own address so every node namespace reaches
	// it.
	Host string
	// Enter, when set, runs fn inside the network namespace the listeners
	// must live in (lab.Do with the switch's namespace): sockets stay in the
	// namespace they were created in, so etcd serves there while running in
	// this process.
	Enter func(fn func() error) error
}

// Cluster is a running (or partly stopped) embedded etcd cluster. Its
// methods are safe for concurrent use.
type Cluster struct {
	opts Options
	log  *slog.Logger

	mu      sync.Mutex // guards members' etcd fields
	members []*member
}

type member struct {
	name      string
	dir       string
	clientURL url.URL
	peerURL   url.URL
	etcd      *embed.Etcd // nil while stopped
}

// Start creates and starts a cluster and waits until every member serves.
func Start(opts Options) (*Cluster, error) {
	if opts.Members <= 0 {
		opts.Members = 1
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = 30 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{opts: opts, log: log.With("component", "etcdembed")}
	host := "127.0.0.1"
	var ports []int
	if opts.Host != "" {
		host = opts.Host
		for i := range 2 * opts.Members {
			ports = append(ports, 2379+i%2+2*(i/2)*10)
		}
	} else {
		var err error
		if ports, err = freePorts(2 * opts.Members); err != nil {
			return nil, err
		}
	}
	for i := range opts.Members {
		m := &member{
			name:      fmt.Sprintf("m%d", i),
			dir:       filepath.Join(opts.Dir, fmt.Sprintf("m%d", i)),
			clientURL: url.URL{Scheme: "http", Host: net.JoinHostPort(host, fmt.Sprint(ports[2*i]))},
			peerURL:   url.URL{Scheme: "http", Host: net.JoinHostPort(host, fmt.Sprint(ports[2*i+1]))},
		}
		c.members = append(c.members, m)
	}
	if err := c.startMembers(c.indexes()); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) indexes() []int {
	out := make([]int, len(c.members))
	for i := range out {
		out[i] = i
	}
	return out
}

// Endpoints returns the client URLs of all members, running or not.
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.members))
	for i, m := range c.members {
		out[i] = m.clientURL.String()
	}
	return out
}

// Size returns the number of members.
func (c *Cluster) Size() int { return len(c.members) }

// Stop stops member i; its data stays for Restart.
func (c *Cluster) Stop(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.members[i]
	if m.etcd == nil {
		return fmt.Errorf("stop %s: %w", m.name, ErrStopped)
	}
	m.etcd.Close()
	m.etcd = nil
	c.log.Info("etcd member stopped", "member", m.name)
	return nil
}

// Wipe deletes stopped member i's data directory, as a lost disk would:
// Restart then brings it up as a new, empty cluster (for a single member;
// the cluster ID stays, the revision starts again from 1).
func (c *Cluster) Wipe(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.members[i]
	if m.etcd != nil {
		return fmt.Errorf("wipe %s: it is running", m.name)
	}
	if err := os.RemoveAll(m.dir); err != nil {
		return fmt.Errorf("wipe %s: %w", m.name, err)
	}
	c.log.Info("etcd member's data directory wiped", "member", m.name, "dir", m.dir)
	return nil
}

// Restart starts stopped members again (all stopped members when none are
// named) and waits until they serve. Waiting needs a quorum, so restart
// enough members together.
func (c *Cluster) Restart(idx ...int) error {
	if len(idx) == 0 {
		c.mu.Lock()
		for i, m := range c.members {
			if m.etcd == nil {
				idx = append(idx, i)
			}
		}
		c.mu.Unlock()
	}
	return c.startMembers(idx)
}

// Close stops every running member. Data directories are left in place.
func (c *Cluster) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.members {
		if m.etcd != nil {
			m.etcd.Close()
			m.etcd = nil
		}
	}
}

func (c *Cluster) startMembers(idx []int) error {
	c.mu.Lock()
	var started []*embed.Etcd
	for _, i := range idx {
		m := c.members[i]
		if m.etcd != nil {
			continue
		}
		var e *embed.Etcd
		start := func() (err error) {
			e, err = embed.StartEtcd(c.config(m))
			return err
		}
		var err error
		if c.opts.Enter != nil {
			err = c.opts.Enter(start)
		} else {
			err = start()
		}
		if err != nil {
			c.mu.Unlock()
			return fmt.Errorf("start etcd member %s: %w", m.name, err)
		}
		m.etcd = e
		started = append(started, e)
	}
	c.mu.Unlock()
	timeout := time.NewTimer(c.opts.ReadyTimeout)
	defer timeout.Stop()
	for _, e := range started {
		select {
		case <-e.Server.ReadyNotify():
		case err := <-e.Err():
			return fmt.Errorf("etcd member %s: %w", e.Config().Name, err)
		case <-timeout.C:
			return fmt.Errorf("etcd member %s not ready after %s", e.Config().Name, c.opts.ReadyTimeout)
		}
	}
	c.log.Info("etcd members ready", "members", len(started))
	return nil
}

func (c *Cluster) config(m *member) *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name = m.name
	cfg.Dir = m.dir
	cfg.ListenClientUrls = []url.URL{m.clientURL}
	cfg.AdvertiseClientUrls = []url.URL{m.clientURL}
	cfg.ListenPeerUrls = []url.URL{m.peerURL}
	cfg.AdvertisePeerUrls = []url.URL{m.peerURL}
	var peers []string
	for _, p := range c.members {
		peers = append(peers, p.name+"="+p.peerURL.String())
	}
	cfg.InitialCluster = strings.Join(peers, ",")
	cfg.InitialClusterToken = "weft-" + filepath.Base(c.opts.Dir)
	cfg.ClusterState = embed.ClusterStateFlagNew
	if _, err := os.Stat(filepath.Join(m.dir, "member")); err == nil {
		cfg.ClusterState = embed.ClusterStateFlagExisting
	}
	cfg.UnsafeNoFsync = true
	cfg.LogLevel = "error"
	if !c.opts.Verbose {
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	}
	return cfg
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}
