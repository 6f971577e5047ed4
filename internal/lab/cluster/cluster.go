//go:build linux

// Package cluster runs a whole weft cluster on a lab topology: an embedded
// etcd listening on the lab switch's own address, a real weftd process in
// every node namespace with its own subnet file, health port and log file,
// and pods attached by the real CNI plugin through libcni, as a container
// runtime attaches them. The daemon's end-to-end tests and `weft lab` use it,
// so there is one harness, not two. In kube mode (Options.Store, kube.go)
// the leases live in the Node objects of a real kube-apiserver that runs on
// the switch beside etcd.
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/weft-net/weft/internal/kubeapi"
	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/labetcd"
	"github.com/weft-net/weft/internal/lease"
	sup "github.com/weft-net/weft/internal/proc"
	"github.com/weft-net/weft/internal/subnetfile"
)

// ErrNotRunning is returned by KillWeftd for a node whose weftd is not
// running.
var ErrNotRunning = errors.New("weftd is not running")

// Defaults.
const (
	// Prefix is the etcd prefix the lab's nodes use (flannel's default).
	Prefix = "/coreos.com/network"
	// HealthPort is every node's --healthz-port.
	HealthPort = 8471
	// EtcdPort is the lab etcd's client port on the switch address.
	EtcdPort = 2379
)

// Options describe a cluster.
type Options struct {
	Lab lab.Options
	// Store is where the nodes keep their leases: StoreEtcd (the default)
	// or StoreKube (Node objects of a real Kubernetes API; see kube.go).
	Store string
	// KubeBins are the Kubernetes binaries of kube mode; the zero value
	// means kubeapi.Binaries("").
	KubeBins kubeapi.Bins
	// EtcdBinary, when set, runs etcd as EtcdMembers (default 1)
	// processes of this etcd-server binary in the switch namespace, on the
	// switch's address, instead of embedding it; every weftd is given all
	// members. The multi-member fault tests use it (an embedded member
	// dials its peers from this process's namespace, which cannot reach
	// the switch's address).
	EtcdBinary  string
	EtcdMembers int
	// Idle lists (1-based) nodes Up builds but neither registers (kube
	// mode) nor starts a weftd or pods on; a test brings them in later.
	Idle []int
	// Backend is net-conf.json's Backend.Type (default vxlan);
	// DirectRouting sets the option of vxlan and ipip.
	Backend       string
	DirectRouting bool
	// NetConf, when set, replaces the generated net-conf.json.
	NetConf string
	// Pods per node (default 0: none).
	Pods int
	// BinDir holds weftd and cni/ (make build's ./bin).
	BinDir string
	// Dir is the working directory: etcd data, and per node its subnet
	// file, CNI state and weftd.log.
	Dir string
	// WeftdArgs are extra flags for every weftd (e.g. --ip-masq).
	WeftdArgs []string
	// Manifest is the manifest whose RBAC objects kube mode applies
	// (deploy.Manifest when empty; deploy.NetpolManifest for weftd's
	// --network-policy).
	Manifest string
	// WeftdEnv are extra environment variables for every weftd
	// (a test's PATH with a shim in front; flags go in WeftdArgs).
	WeftdEnv []string
	// EtcdCommand, when set, runs etcd as a process of its own inside the
	// switch namespace (argv; "--dir", "--host" are appended), so the
	// cluster outlives the process that built it (`weft lab up`). Otherwise
	// etcd is embedded in this process (tests).
	EtcdCommand []string
	// Detach starts weftd processes in sessions of their own, so they keep
	// running after this process exits.
	Detach bool
	// ReadyTimeout bounds WaitReady (default 30 s); a slower kernel (the
	// kernel tier's User-Mode Linux) needs more.
	ReadyTimeout time.Duration
	// Progress, when set, is told each step as it starts.
	Progress func(step string)
	Logger   *slog.Logger
}

func (o Options) progress(format string, a ...any) {
	if o.Progress != nil {
		o.Progress(fmt.Sprintf(format, a...))
	}
}

// NetConfJSON returns the net-conf.json the options describe.
func (o Options) NetConfJSON() string {
	if o.NetConf != "" {
		return o.NetConf
	}
	b := map[string]any{"Type": o.Backend}
	if o.Backend == "" {
		b["Type"] = "vxlan"
	}
	if o.DirectRouting {
		b["DirectRouting"] = true
	}
	out, _ := json.Marshal(map[string]any{"Network": "10.244.0.0/16", "Backend": b})
	return string(out)
}

// Cluster is a running cluster.
type Cluster struct {
	o         Options
	log       *slog.Logger
	lab       *lab.Lab
	etcd      *labetcd.Cluster
	etcdProcs []*etcdMember // with Options.EtcdBinary (etcd.go)
	endpoint  string        // the first member's client URL
	members   []string      // every member's client URL
	swNS      string        // the switch namespace etcd listens in
	kube      *kubeMode

	kubeconfigs map[int]string // per-node --kubeconfig-file overrides (guarded by mu)

	mu      sync.Mutex // guards procs, pods, closers and kubeconfigs
	procs   map[int]*proc
	pods    []Pod
	closers []io.Closer // log files
}

// Pod is a pod attached by the CNI plugin.
type Pod struct {
	Node, Index int
	NS          string
	ContainerID string
	Addrs       []netip.Addr
}

// Up builds the lab, starts etcd with the network config, a weftd per node,
// waits until every node is ready, then attaches Pods pods per node.
func Up(ctx context.Context, o Options) (_ *Cluster, retErr error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	switch o.Store {
	case "":
		o.Store = StoreEtcd
	case StoreEtcd, StoreKube:
	default:
		return nil, fmt.Errorf("store %q: want %s or %s", o.Store, StoreEtcd, StoreKube)
	}
	c := &Cluster{o: o, log: o.Logger, procs: map[int]*proc{}}
	defer func() {
		if retErr != nil {
			_ = c.Down(context.WithoutCancel(ctx))
		}
	}()
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", o.Dir, err)
	}
	var err error
	o.progress("building the topology: %d nodes, switch, router=%v", o.Lab.Nodes, len(o.Lab.Far) > 0 || o.Lab.Outside || o.Lab.Router)
	if c.lab, err = lab.Up(ctx, o.Logger, o.Lab); err != nil {
		return nil, fmt.Errorf("build lab: %w", err)
	}
	o.progress("starting etcd on %s with %s", c.lab.Topology().ServiceAddr(), o.NetConfJSON())
	if err := c.startEtcd(ctx); err != nil {
		return nil, err
	}
	if o.Store == StoreKube {
		if err := c.startKube(ctx); err != nil {
			return nil, err
		}
		if err := c.registerNodes(ctx); err != nil {
			return nil, err
		}
	}
	for _, n := range c.activeNodes() {
		o.progress("starting weftd on node %d (log %s)", n, c.LogFile(n))
		if err := c.StartWeftd(n); err != nil {
			return nil, err
		}
	}
	for _, n := range c.activeNodes() {
		if err := c.WaitReady(ctx, n); err != nil {
			return nil, err
		}
		o.progress("node %d is ready", n)
	}
	for _, n := range c.activeNodes() {
		for p := 1; p <= o.Pods; p++ {
			o.progress("attaching pod %d on node %d with the CNI plugin", p, n)
			if _, err := c.AddPod(ctx, n, p); err != nil {
				return nil, err
			}
		}
	}
	return c, nil
}

// activeNodes are the nodes Up starts: all but Options.Idle.
func (c *Cluster) activeNodes() []int {
	var out []int
	for i := range c.lab.Nodes() {
		if !slices.Contains(c.o.Idle, i+1) {
			out = append(out, i+1)
		}
	}
	return out
}

// registerNodes registers every active node's Node and waits for their
// podCIDRs.
func (c *Cluster) registerNodes(ctx context.Context) error {
	for _, n := range c.activeNodes() {
		c.o.progress("registering node %s (InternalIP %s)", NodeName(n), c.lab.Nodes()[n-1].Addrs()[0])
		if err := c.RegisterNode(ctx, n); err != nil {
			return err
		}
	}
	for _, n := range c.activeNodes() {
		cidrs, err := c.WaitPodCIDR(ctx, n)
		if err != nil {
			return err
		}
		c.o.progress("node %s has podCIDRs %v", NodeName(n), cidrs)
	}
	return nil
}

// Attach returns a Cluster for a lab built earlier (by another process): its
// files, etcd endpoint and health ports; weftd processes are not tracked.
func Attach(l *lab.Lab, o Options) *Cluster {
	c := &Cluster{o: o, log: o.Logger, lab: l, procs: map[int]*proc{}}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	topo := l.Topology()
	c.swNS = topo.ServiceNS()
	c.endpoint = "http://" + net.JoinHostPort(topo.ServiceAddr().String(), strconv.Itoa(EtcdPort))
	if err := c.attachKube(); err != nil {
		c.log.Warn("kube state of the lab unreadable", "err", err)
	}
	return c
}

func (c *Cluster) startEtcd(ctx context.Context) error {
	topo := c.lab.Topology()
	addr, swNS := topo.ServiceAddr(), topo.ServiceNS()
	dir := filepath.Join(c.o.Dir, "etcd")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	c.swNS = swNS
	if len(c.o.EtcdCommand) > 0 {
		return c.startEtcdProcess(ctx, swNS, dir, addr)
	}
	if c.o.EtcdBinary != "" {
		return c.startEtcdMembers(ctx, dir, addr)
	}
	var err error
	c.etcd, err = labetcd.Start(labetcd.Options{Dir: dir, Host: addr.String(), Logger: c.log,
		Enter: func(fn func() error) error { return lab.Do(swNS, fn) }})
	if err != nil {
		return fmt.Errorf("start etcd on %s: %w", addr, err)
	}
	c.members = c.etcd.Endpoints()
	c.endpoint = c.members[0]
	return c.Put(ctx, Prefix+"/config", c.o.NetConfJSON())
}

// Put writes a key into the lab's etcd (from this process, through the
// switch namespace).
func (c *Cluster) Put(ctx context.Context, key, value string) error {
	return c.withClient(ctx, func(ctx context.Context, cli *clientv3.Client) error {
		_, err := cli.Put(ctx, key, value)
		return err
	})
}

// PutLeased writes many keys attached to one etcd lease of ttl, in
// transactions of 100 (peer leases for benchmarks).
func (c *Cluster) PutLeased(ctx context.Context, kvs [][2]string, ttl time.Duration) error {
	return c.withClient(ctx, func(ctx context.Context, cli *clientv3.Client) error {
		g, err := cli.Grant(ctx, int64(ttl.Seconds()))
		if err != nil {
			return fmt.Errorf("grant etcd lease: %w", err)
		}
		for start := 0; start < len(kvs); start += 100 {
			var ops []clientv3.Op
			for _, kv := range kvs[start:min(start+100, len(kvs))] {
				ops = append(ops, clientv3.OpPut(kv[0], kv[1], clientv3.WithLease(g.ID)))
			}
			if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				return fmt.Errorf("write leases: %w", err)
			}
		}
		return nil
	})
}

// Delete removes a key from the lab's etcd.
func (c *Cluster) Delete(ctx context.Context, key string) error {
	return c.withClient(ctx, func(ctx context.Context, cli *clientv3.Client) error {
		_, err := cli.Delete(ctx, key)
		return err
	})
}

// withClient runs fn with an etcd client whose connections are made from the
// switch namespace (the only place besides the nodes that reaches etcd).
func (c *Cluster) withClient(ctx context.Context, fn func(context.Context, *clientv3.Client) error) error {
	cli, err := c.EtcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	return fn(ctx, cli)
}

// EtcdClient returns a client of the lab's etcd; the caller closes it. gRPC
// dials from its own goroutines, so the dialer enters the switch namespace
// itself for each connection.
func (c *Cluster) EtcdClient() (*clientv3.Client, error) {
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		return lab.DialContext(ctx, c.swNS, "tcp", addr)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dial)}})
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	return cli, nil
}

// Endpoint is the etcd URL the nodes use (the first member's).
func (c *Cluster) Endpoint() string { return c.endpoint }

// Endpoints are the client URLs of every etcd member.
func (c *Cluster) Endpoints() []string {
	if len(c.members) == 0 {
		return []string{c.endpoint}
	}
	return c.members
}

// Lab returns the topology.
func (c *Cluster) Lab() *lab.Lab { return c.lab }

// NodeDir is node's working directory.
func (c *Cluster) NodeDir(node int) string { return filepath.Join(c.o.Dir, "n"+strconv.Itoa(node)) }

// SubnetFile is node's subnet.env.
func (c *Cluster) SubnetFile(node int) string { return filepath.Join(c.NodeDir(node), "subnet.env") }

// LogFile is node's weftd log.
func (c *Cluster) LogFile(node int) string { return filepath.Join(c.NodeDir(node), "weftd.log") }

// SubnetEnv reads node's subnet.env.
func (c *Cluster) SubnetEnv(node int) (subnetfile.Env, error) {
	return subnetfile.Read(c.SubnetFile(node))
}

// NodeNS is node's namespace.
func (c *Cluster) NodeNS(node int) string {
	h, err := c.lab.Node(node)
	if err != nil {
		return ""
	}
	return h.NS
}

// Pods returns the attached pods.
func (c *Cluster) Pods() []Pod {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Pod(nil), c.pods...)
}

// startEtcdProcess runs EtcdCommand in the switch namespace, detached, and
// waits until it accepts connections.
func (c *Cluster) startEtcdProcess(ctx context.Context, swNS, dir string, addr netip.Addr) error {
	logf, err := os.OpenFile(filepath.Join(c.o.Dir, "etcd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open etcd log: %w", err)
	}
	defer logf.Close()
	argv := append(append([]string(nil), c.o.EtcdCommand...), "--dir", dir, "--host", addr.String())
	cmd := lab.Command(context.Background(), swNS, argv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	c.endpoint = "http://" + net.JoinHostPort(addr.String(), strconv.Itoa(EtcdPort))
	if err := c.waitListening(ctx, strings.TrimPrefix(c.endpoint, "http://"), exited, logf.Name()); err != nil {
		return err
	}
	return c.Put(ctx, Prefix+"/config", c.o.NetConfJSON())
}

// waitListening waits up to 30 s until etcd accepts connections at host in
// the switch namespace, failing at once when exited closes; log names the
// file its output went to.
func (c *Cluster) waitListening(ctx context.Context, host string, exited <-chan struct{}, log string) error {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		select {
		case <-exited:
			return fmt.Errorf("etcd on %s exited\n%s", host, sup.ErrorTail(log, 8))
		default:
		}
		if conn, err := lab.DialContext(ctx, c.swNS, "tcp", host); err == nil {
			conn.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("etcd not listening on %s after 30 s\n%s", host, sup.ErrorTail(log, 8))
}

// Down stops every weftd, etcd and removes the lab.
func (c *Cluster) Down(ctx context.Context) error {
	var errs []error
	c.mu.Lock()
	nodes := make([]int, 0, len(c.procs))
	for n := range c.procs {
		nodes = append(nodes, n)
	}
	c.mu.Unlock()
	for _, n := range nodes {
		if err := c.KillWeftd(n, true); !errors.Is(err, ErrNotRunning) {
			errs = append(errs, err)
		}
	}
	if c.kube != nil && c.kube.cp != nil {
		errs = append(errs, c.kube.cp.Stop())
	}
	if c.etcd != nil {
		c.etcd.Close()
	}
	c.stopEtcdMembers()
	c.mu.Lock()
	for _, cl := range c.closers {
		_ = cl.Close()
	}
	c.closers = nil
	c.mu.Unlock()
	if c.lab != nil {
		errs = append(errs, c.lab.Down(ctx))
	}
	return errors.Join(errs...)
}

// confList is the kube-flannel conflist pointed at node's files.
func (c *Cluster) confList(node int) (*libcni.NetworkConfigList, error) {
	d := c.NodeDir(node)
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	src := `{"cniVersion":"1.1.0","name":"cbr0","plugins":[
		{"type":"flannel","subnetFile":` + q(c.SubnetFile(node)) + `,"dataDir":` + q(filepath.Join(d, "cni", "flannel")) + `,
		 "ipam":{"dataDir":` + q(filepath.Join(d, "cni", "ipam")) + `},"delegate":{"hairpinMode":true,"isDefaultGateway":true}},
		{"type":"portmap","capabilities":{"portMappings":true}}]}`
	return libcni.ConfListFromBytes([]byte(src))
}

// Lease returns the lease node's weftd published: the key of the subnet in
// its subnet.env, read from the lab's etcd; in kube mode, its Node's
// podCIDRs and annotations.
func (c *Cluster) Lease(ctx context.Context, node int) (lease.Lease, error) {
	if c.kube != nil {
		l, err := c.kubeLease(ctx, node)
		if err != nil {
			return lease.Lease{}, fmt.Errorf("lease of node %d: %w", node, err)
		}
		return l, nil
	}
	env, err := c.SubnetEnv(node)
	if err != nil {
		return lease.Lease{}, err
	}
	l := lease.Lease{Subnet: env.Subnet.Masked(), IPv6Subnet: env.IPv6Subnet.Masked()}
	key := Prefix + "/subnets/" + l.Key()
	err = c.withClient(ctx, func(ctx context.Context, cli *clientv3.Client) error {
		resp, err := cli.Get(ctx, key)
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			return fmt.Errorf("no lease at %s", key)
		}
		l.Attrs, err = lease.ParseAttrs(resp.Kvs[0].Value)
		return err
	})
	if err != nil {
		return lease.Lease{}, fmt.Errorf("lease of node %d: %w", node, err)
	}
	return l, nil
}
