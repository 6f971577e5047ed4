//go:build linux

package daemon

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/testenv"

	"github.com/vishvananda/netns"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/backend/hostgw"
	"github.com/weft-net/weft/internal/backend/vxlan"
	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/lab/labetcd"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/metrics"
	"github.com/weft-net/weft/internal/netlinkx"
	"github.com/weft-net/weft/internal/store/etcd"

	"github.com/weft-net/weft/internal/netlinkx/netlinkxtest"
)

// The in-process tier: weftd's Run with its netlink handle in a namespace the
// test made, against embedded etcd on loopback. The process tier (real
// binaries across node namespaces) is in e2e_test.go.

const prefix = "/coreos.com/network"

func needRoot(t testing.TB) {
	t.Helper()
	testenv.Privileged(t, "creates network namespaces")
}

func sh(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// daemonInputs parses weftd's arguments with c's etcd endpoints added, and
// opens the etcd store a daemon of c uses; the caller closes it.
func (c *cluster) daemonInputs(t testing.TB, log *slog.Logger, args ...string) (config.Options, *etcd.Store) {
	t.Helper()
	o, err := config.ParseOptions(append([]string{"--etcd-endpoints", strings.Join(c.endpoints, ",")}, args...),
		func(string) (string, bool) { return "", false }, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := etcd.New(etcd.Options{Endpoints: c.endpoints, Prefix: prefix, Logger: log, ResetCheckEvery: c.resetCheck})
	if err != nil {
		t.Fatal(err)
	}
	return o, st
}

// node is a namespace with an eth0 at addr/24 and a default route.
type node struct {
	name string
	ns   netns.NsHandle
	nl   *netlinkx.Handle
	addr netip.Addr
}

func newNode(t testing.TB, addr string) *node {
	t.Helper()
	needRoot(t)
	gw := netip.MustParsePrefix(addr + "/24").Masked().Addr().Next()
	name := testenv.NodeNamespace(t, "wd-", netip.MustParsePrefix(addr+"/24"), gw)
	nl, ns := netlinkxtest.In(t, name)
	return &node{name: name, ns: ns, nl: nl, addr: netip.MustParseAddr(addr)}
}

// cluster is an embedded etcd with a network config.
type cluster struct {
	etcd      *labetcd.Cluster
	endpoints []string
	cli       *clientv3.Client
	// resetCheck is the daemons' etcd.Options.ResetCheckEvery (0: the
	// default).
	resetCheck time.Duration
}

func newCluster(t testing.TB, netconf string) *cluster {
	t.Helper()
	c, err := labetcd.Start(labetcd.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	cl := &cluster{etcd: c, endpoints: c.Endpoints(), cli: cli}
	cl.put(t, prefix+"/config", netconf, false)
	return cl
}

// testNetConf is a net-conf.json whose nodes lease subnets from
// 10.244.100.0 to 10.244.200.0 only, so that the peer leases a test writes
// below 10.244.100.0 never land on the subnet the daemon picked at random
// (a fresh-clone make test once saw it pick 10.244.6.0/24, then the test's
// peer lease overwrote it).
func testNetConf(backendType string) string {
	return `{"Network":"10.244.0.0/16","SubnetMin":"10.244.100.0","SubnetMax":"10.244.200.0","Backend":{"Type":"` + backendType + `"}}`
}

func (c *cluster) put(t testing.TB, key, value string, withLease bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var opts []clientv3.OpOption
	if withLease {
		g, err := c.cli.Grant(ctx, 3600)
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, clientv3.WithLease(g.ID))
	}
	if _, err := c.cli.Put(ctx, key, value, opts...); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) del(t testing.TB, key string) {
	t.Helper()
	if _, err := c.cli.Delete(context.Background(), key); err != nil {
		t.Fatal(err)
	}
}

// peerLease writes a vxlan peer lease in flannel's JSON, on an etcd lease
// of an hour, and returns its key.
func (c *cluster) peerLease(t testing.TB, subnet, publicIP, mac, backendType string) string {
	t.Helper()
	key, _ := c.peerLeaseTTL(t, subnet, publicIP, mac, backendType, time.Hour)
	return key
}

// peerLeaseTTL is peerLease on an etcd lease of ttl; it also returns when
// etcd had granted that lease (the lease expires ttl after, or a little
// before).
func (c *cluster) peerLeaseTTL(t testing.TB, subnet, publicIP, mac, backendType string, ttl time.Duration) (string, time.Time) {
	t.Helper()
	data, _ := json.Marshal(map[string]any{"VNI": 1, "VtepMAC": mac})
	v, _ := json.Marshal(map[string]any{"PublicIP": publicIP, "PublicIPv6": nil, "BackendType": backendType, "BackendData": json.RawMessage(data)})
	key := prefix + "/subnets/" + strings.ReplaceAll(subnet, "/", "-")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g, err := c.cli.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		t.Fatal(err)
	}
	granted := time.Now()
	if _, err := c.cli.Put(ctx, key, string(v), clientv3.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	return key, granted
}

// logBuffer collects the daemon's log lines.
type logBuffer = testenv.LogBuffer

// running is a daemon started by startDaemon.
type running struct {
	own    lease.Lease
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned, with err set
	err    error
	log    *logBuffer
	file   string
	m      *metrics.Metrics
}

func (r *running) stop(t testing.TB) {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
		if r.err != nil {
			t.Errorf("daemon stopped with %v", r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not stop")
	}
}

func backends() backend.Registry {
	return backend.Registry{vxlan.Type(), hostgw.Type()}
}

// startDaemon runs the daemon for n until the test ends and waits until it is
// ready.
func startDaemon(t testing.TB, n *node, c *cluster, subnetFile string, args ...string) *running {
	t.Helper()
	return startDaemonWith(t, backends(), n, c, subnetFile, args...)
}

// startDaemonWith is startDaemon with a backend registry of the test's.
func startDaemonWith(t testing.TB, reg backend.Registry, n *node, c *cluster, subnetFile string, args ...string) *running {
	t.Helper()
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	o, st := c.daemonInputs(t, log, append([]string{"--subnet-file", subnetFile, "--public-ip", n.addr.String()}, args...)...)
	return launch(t, o, Deps{Logger: log, Store: st, Backends: reg, Kernel: n.nl, ResyncEvery: 5 * time.Second},
		logs, subnetFile, 30*time.Second, func() { _ = st.Close() })
}

// launch runs the daemon with o and d until the test ends (Ready and
// Metrics are set here; after, when set, runs once Run has returned) and
// waits up to readyIn for it to be ready.
func launch(t testing.TB, o config.Options, d Deps, logs *logBuffer, file string, readyIn time.Duration, after func()) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan lease.Lease, 1)
	r := &running{cancel: cancel, done: make(chan struct{}), log: logs, file: file, m: metrics.New("test")}
	d.Ready, d.Metrics = func(l lease.Lease) { ready <- l }, r.m
	go func() {
		defer close(r.done)
		r.err = Run(ctx, o, d)
		if after != nil {
			after()
		}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10 s of its context's end")
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", logs.String())
		}
	})
	select {
	case r.own = <-ready:
	case <-r.done:
		t.Fatalf("daemon exited: %v\n%s", r.err, logs.String())
	case <-time.After(readyIn):
		t.Fatalf("daemon not ready after %v\n%s", readyIn, logs.String())
	}
	return r
}

// kernel renders the objects weft manages in n as sorted text lines.
func (n *node) kernel(t testing.TB) string {
	t.Helper()
	var lines []string
	for _, cmd := range [][]string{
		{"ip", "-n", n.name, "route", "show", "proto", "87"},
		{"ip", "-n", n.name, "neigh", "show", "dev", "flannel.1", "nud", "permanent"},
		{"bridge", "-n", n.name, "fdb", "show", "dev", "flannel.1"},
	} {
		out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput()
		if err != nil && !strings.Contains(string(out), "does not exist") && !strings.Contains(string(out), "Cannot find device") {
			t.Fatalf("%s: %v %s", strings.Join(cmd, " "), err, out)
		}
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if l != "" && !strings.Contains(l, "does not exist") && !strings.Contains(l, "Cannot find device") &&
				(cmd[0] != "bridge" || strings.Contains(l, " dst ")) {
				lines = append(lines, strings.Join(strings.Fields(l), " "))
			}
		}
	}
	return strings.Join(lines, "\n")
}

func tempFile(t testing.TB, name string) string { return filepath.Join(t.TempDir(), name) }
