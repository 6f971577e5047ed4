//go:build linux

// Package kubelet turns a weft lab into a real Kubernetes cluster (issue
// 17): per node namespace a real containerd and a real kubelet that
// registers its Node, kube-scheduler beside the lab's kube-apiserver and
// kube-controller-manager, weft deployed by `kubectl apply` of
// deploy/kube-weft.yml (its image reference set to the image hack/image.sh
// built and imagePullPolicy Never, nothing else changed) or, with
// Options.Flannel, flannel v0.28.9 by its own release manifest (the start of
// an upgrade to weft), and a Deployment of busybox pods spread across the
// nodes that ping each other.
//
// # Design notes
//
//   - The lab is cluster.Up in etcd mode with every node idle: the
//     namespaces and the embedded etcd, no weftd and no Node (kubelet
//     registers them, and weftd runs as the DaemonSet's pod). The control
//     plane is kubeapi.Start over that etcd in the switch namespace, with
//     the controllers a real cluster needs besides podCIDR allocation
//     (node-lifecycle, daemonset, deployment, replicaset).
//   - A Node's name is its underlay IPv4 address: the apiserver dials a
//     kubelet (exec, logs) at the Node's first address of its preferred
//     types, Hostname first, and the switch namespace cannot resolve a name
//     like n1; it has no --kubelet-preferred-address-types flag to change.
//   - Each node has a mount namespace of its own (held by a `sleep` in the
//     node's network namespace), a copy of the host's in which the node's
//     directories are bound over the manifest's hostPaths (/run/flannel,
//     /etc/cni/net.d, /opt/cni/bin) and /var/lib/cni, /run/containerd,
//     /run/netns, /var/log/pods, /var/log/containers and
//     /var/lib/kubelet/device-plugins (hostBinds); /sys and the cgroup
//     mounts are the host's. containerd and kubelet run in it and in the node's network
//     namespace through nsenter (not `ip netns exec`, which remounts /sys).
//     Mounts made in it never show on the host, and vanish with it.
//   - weftd's in-cluster configuration dials the kubernetes Service's
//     address (10.96.0.1:443); no kube-proxy runs, so each node namespace
//     DNATs it to the apiserver.
//   - One kubelet lab at a time: two would share the host mount points
//     above and kubelet's sysctls. Up takes LockFile (/run/weft-lab/
//     kubelet.lock), naming the lab, its directory and its process, and
//     waits up to Options.LockWait for another lab to go down; Purge (so
//     Down) releases it. A lock whose process is gone and whose lab is gone
//     (directory or namespaces) is stale and taken over (lock.go).
//   - Everything the lab changes outside its directory and namespaces is
//     recorded in <Dir>/host.json before it is changed (sysctls, mount
//     points created on the host, cgroup roots), and Purge, which needs
//     nothing else, puts it back: Down is Purge after stopping what this
//     process started, and Purge alone cleans up after a crash.
//   - Two lifetimes. A test's lab (the default) is tied to the test
//     process: etcd is embedded in it and every other process dies with it
//     (PR_SET_PDEATHSIG). With Options.Detach (`weft lab up --kubelet`)
//     etcd runs as a process of its own (Options.EtcdCommand, `weft lab
//     etcd`, in the switch namespace, as the CLI's etcd lab does) and every
//     process is started in a session of its own, so the lab outlives the
//     command. Either way <Dir>/kubelet.json records the nodes, how to run
//     kubectl, and every process started with its pid and start time, so
//     another process finds the lab again (Attach: `weft lab status`,
//     `exec`) and Purge stops kubelet and containerd before it kills what
//     is left by cgroup and namespace (`weft lab down`). The lock outlives
//     the command too: it is held while the lab's directory and namespaces
//     exist.
package kubelet

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/weft-net/weft/deploy"
	"github.com/weft-net/weft/internal/kubeapi"
	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/cluster"
)

// Bins are the binaries, images and templates the lab runs.
type Bins struct {
	Kube          kubeapi.Bins // kube-apiserver, kube-controller-manager, kubectl (hack/kube-bins.sh)
	NodeDir       string       // kubelet, kube-scheduler (hack/node-bins.sh)
	ContainerdDir string       // containerd, ctr, containerd-shim-runc-v2 (hack/containerd-bins.sh)
	CNIDir        string       // bridge, host-local, loopback, portmap (make build's bin/cni)
	ImageDir      string       // pause.tar, busybox.tar (hack/node-images.sh)
	WeftImage     string       // weft's OCI archive (hack/image.sh: bin/weft-image.oci.tar)
	// ContainerdConfig is hack/containerd/config.toml.tmpl.
	ContainerdConfig string
	// FlannelDir holds flannel.tar (flannel v0.28.9's image) and
	// kube-flannel.yml (hack/flannel-image.sh); only Options.Flannel needs
	// it.
	FlannelDir string
	// KubeProxy is kube-proxy's binary (hack/e2e-bins.sh, E2E.KubeProxy);
	// only Options.KubeProxy needs it.
	KubeProxy string
}

// FindFlannel runs hack/flannel-image.sh (it builds once, about 3 minutes
// cold) and returns its directory, for Bins.FlannelDir.
func FindFlannel(ctx context.Context, repo string) (string, error) {
	d, err := runHack(ctx, repo, "flannel-image.sh")
	if err != nil {
		return "", err
	}
	for _, f := range []string{flannelImage, flannelManifest} {
		if _, err := os.Stat(filepath.Join(d, f)); err != nil {
			return "", err
		}
	}
	return d, nil
}

// The files of Bins.FlannelDir.
const (
	flannelImage    = "flannel.tar"
	flannelManifest = "kube-flannel.yml"
)

// runHack runs a hack script of the repository (each builds once and then
// only prints its directory) and returns the directory it prints.
func runHack(ctx context.Context, repo, script string) (string, error) {
	out, err := exec.CommandContext(ctx, "bash", filepath.Join(repo, "hack", script)).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		return "", fmt.Errorf("hack/%s: %w", script, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// FindBins runs the repository's hack scripts (each builds once and then
// only prints its directory) and returns what they name. Bins.FlannelDir is
// left empty: FindFlannel fills it.
func FindBins(ctx context.Context, repo string) (Bins, error) {
	dir := func(script string) (string, error) { return runHack(ctx, repo, script) }
	var b Bins
	var err error
	kubeDir, err := dir("kube-bins.sh")
	if err != nil {
		return b, err
	}
	if b.Kube, err = kubeapi.Binaries(kubeDir); err != nil {
		return b, err
	}
	if b.NodeDir, err = dir("node-bins.sh"); err != nil {
		return b, err
	}
	if b.ContainerdDir, err = dir("containerd-bins.sh"); err != nil {
		return b, err
	}
	if b.ImageDir, err = dir("node-images.sh"); err != nil {
		return b, err
	}
	b.CNIDir = filepath.Join(repo, "bin", "cni")
	b.WeftImage = filepath.Join(repo, "bin", "weft-image.oci.tar")
	b.ContainerdConfig = filepath.Join(repo, "hack", "containerd", "config.toml.tmpl")
	for _, p := range []string{filepath.Join(b.NodeDir, "kubelet"), filepath.Join(b.NodeDir, "kube-scheduler"),
		filepath.Join(b.ContainerdDir, "containerd"), filepath.Join(b.ContainerdDir, "ctr"),
		filepath.Join(b.ImageDir, "pause.tar"), filepath.Join(b.ImageDir, "busybox.tar"), b.WeftImage, b.ContainerdConfig} {
		if _, err := os.Stat(p); err != nil {
			return b, err
		}
	}
	for _, p := range cniPlugins {
		if _, err := os.Stat(filepath.Join(b.CNIDir, p)); err != nil {
			return b, fmt.Errorf("%w (run make build)", err)
		}
	}
	return b, nil
}

// Options describe a lab of real nodes.
type Options struct {
	// Name is the lab's name (lab.ValidateName); empty means a random
	// "wk..." one.
	Name string
	// Nodes is the number of nodes; 0 means 3.
	Nodes int
	// Replicas is the number of test pods; 0 means one per node.
	Replicas int
	// Dir is the lab's directory; it must not exist (or be empty), and Down
	// removes it.
	Dir  string
	Bins Bins
	// Logger gets progress; nil discards it.
	Logger *slog.Logger
	// BridgeOnly leaves weft out: each node gets a conflist of the bridge
	// plugin alone (host-local over its podCIDR), the baseline of the
	// real-node benchmark. Pods on different nodes cannot reach each other.
	BridgeOnly bool
	// Flannel deploys flannel v0.28.9 by its own kube-flannel.yml
	// (Bins.FlannelDir; every image reference set to its image and
	// imagePullPolicy Never beside it, nothing else changed) instead of
	// weft: the cluster an upgrade to weft starts from. The lab's directory
	// still gets kube-weft.yml, ready to apply over it (WeftManifest).
	Flannel bool
	// LockWait is how long Up waits for another kubelet lab to go down
	// (only one may be up at a time: see LockFile); 0 means Up fails at once
	// with ErrLabRunning.
	LockWait time.Duration
	// Detach leaves the lab running after this process exits: etcd runs as
	// EtcdCommand (required with Detach) instead of embedded, and every
	// process is started in a session of its own. Purge (`weft lab down`)
	// removes such a lab.
	Detach bool
	// EtcdCommand is the argv of the etcd process of a detached lab (`weft
	// lab etcd`; "--dir", "--host" are appended), run in the switch
	// namespace.
	EtcdCommand []string
	// Progress, when set, is told each phase of Up as it ends.
	Progress func(step string)
	// Deploy, when set, deploys weft in place of `kubectl apply` of
	// kube-weft.yml (helm_test.go installs weft's Helm chart with it); it is
	// given weft's image reference, imported on every node. Up then waits for
	// weft's DaemonSet as after the manifest. Not with Flannel or BridgeOnly.
	Deploy func(ctx context.Context, l *Lab, image string) error
	// Outside adds the lab's outside host (lab.Options.Outside: <name>-out
	// behind the router <name>-rt, not in the cluster), which pods reach
	// masqueraded.
	Outside bool
	// NetworkPolicy deploys deploy/kube-weft-netpol.yml (deploy.NetpolManifest:
	// weftd with --network-policy and the read rights it needs) instead of
	// kube-weft.yml. Not with Flannel, BridgeOnly or Deploy.
	NetworkPolicy bool
	// KubeProxy starts kube-proxy (Bins.KubeProxy, iptables mode) on every
	// node once the nodes are Ready, and the controller manager's
	// EndpointSlice controller, so that Service ClusterIPs reach their pods
	// (netpol_proxy.go). Up waits until every kube-proxy answers /healthz.
	KubeProxy bool
	// ExtraImages are OCI archives imported into every node's containerd
	// besides pause, busybox and weft's (E2E.AgnhostImage for Kubernetes'
	// NetworkPolicy suite).
	ExtraImages []string
}

// Test objects.
const (
	TestNamespace  = "weft-test"
	TestDeployment = "pinger"
	WeftNamespace  = cluster.KubeNamespace
	BusyboxImage   = "weft.local/busybox:1"
)

// Phase is one timed step of Up.
type Phase struct {
	Name string
	Took time.Duration
}

// Lab is a running lab of real nodes.
type Lab struct {
	o     Options
	log   *slog.Logger
	cl    *cluster.Cluster
	cp    *kubeapi.ControlPlane
	sched *proc
	nodes []*node
	host  *hostState
	// state is what Attach loaded (kubectl without a ControlPlane); nil for a
	// lab this process brought up.
	state *labState

	mu     sync.Mutex
	phases []Phase
}

// Phases returns the timed steps of Up so far.
func (l *Lab) Phases() []Phase {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.phases)
}

func (l *Lab) phase(name string, begin time.Time) {
	took := time.Since(begin)
	l.mu.Lock()
	l.phases = append(l.phases, Phase{name, took})
	l.mu.Unlock()
	l.log.Info("phase done", "phase", name, "took", took.Round(time.Millisecond))
	if l.o.Progress != nil {
		l.o.Progress(fmt.Sprintf("%s (%v)", name, took.Round(time.Millisecond)))
	}
}

// ControlPlane returns the control plane (nil before it started).
func (l *Lab) ControlPlane() *kubeapi.ControlPlane { return l.cp }

// Name returns the lab's name.
func (l *Lab) Name() string { return l.o.Name }

// Up builds the lab, brings every node up as a Kubernetes node, deploys weft
// by its manifest and a Deployment of test pods, and returns when every pod
// is Running (call PingAll to check the network). On error everything made
// so far is removed again (the error also says what could not be).
func Up(ctx context.Context, o Options) (_ *Lab, retErr error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.Replicas == 0 {
		o.Replicas = o.Nodes
	}
	if o.Name == "" {
		name, err := lab.RandomName("wk")
		if err != nil {
			return nil, err
		}
		o.Name = name
	}
	if err := lab.ValidateName(o.Name); err != nil {
		return nil, err
	}
	if o.Dir == "" || !filepath.IsAbs(o.Dir) {
		return nil, fmt.Errorf("kubelet lab: Dir %q must be an absolute path", o.Dir)
	}
	if o.Detach && len(o.EtcdCommand) == 0 {
		return nil, errors.New("kubelet lab: a detached lab needs EtcdCommand")
	}
	if o.Flannel && o.BridgeOnly {
		return nil, errors.New("kubelet lab: Flannel and BridgeOnly exclude each other")
	}
	if o.Deploy != nil && (o.Flannel || o.BridgeOnly) {
		return nil, errors.New("kubelet lab: Deploy deploys weft: not with Flannel or BridgeOnly")
	}
	if o.NetworkPolicy && (o.Flannel || o.BridgeOnly || o.Deploy != nil) {
		return nil, errors.New("kubelet lab: NetworkPolicy deploys kube-weft-netpol.yml: not with Flannel, BridgeOnly or Deploy")
	}
	if o.KubeProxy && o.Bins.KubeProxy == "" {
		return nil, errors.New("kubelet lab: KubeProxy needs Bins.KubeProxy (FindE2E)")
	}
	if o.Flannel && o.Bins.FlannelDir == "" {
		return nil, errors.New("kubelet lab: Flannel needs Bins.FlannelDir (FindFlannel)")
	}
	if ents, err := os.ReadDir(o.Dir); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("kubelet lab: %s is not empty", o.Dir)
	}
	l := &Lab{o: o, log: o.Logger.With("component", "kubelet-lab", "lab", o.Name)}
	if err := l.lock(ctx); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, errors.Join(err, unlock(o.Name, o.Dir))
	}
	defer func() {
		if retErr != nil {
			// The logs go with the directory: keep their tails in the error.
			retErr = fmt.Errorf("%w\n%s", retErr, l.Logs(15))
			if err := l.Down(context.WithoutCancel(ctx)); err != nil {
				retErr = errors.Join(retErr, fmt.Errorf("clean up: %w", err))
			}
		}
	}()
	if err := l.saveHost(); err != nil {
		return l, err
	}

	begin := time.Now()
	idle := make([]int, o.Nodes)
	for i := range idle {
		idle[i] = i + 1
	}
	var err error
	co := cluster.Options{Lab: lab.Options{Name: o.Name, Nodes: o.Nodes, Outside: o.Outside}, Idle: idle,
		Dir: filepath.Join(o.Dir, "cluster"), Logger: l.log}
	if o.Detach {
		co.EtcdCommand, co.Detach = o.EtcdCommand, true
	}
	l.cl, err = cluster.Up(ctx, co)
	if err != nil {
		return l, err
	}
	l.phase("lab namespaces and etcd", begin)

	begin = time.Now()
	if err := l.startControlPlane(ctx); err != nil {
		return l, err
	}
	if err := l.saveState(); err != nil {
		return l, err
	}
	l.phase("control plane (apiserver, controller-manager, scheduler)", begin)

	begin = time.Now()
	err = l.startNodes(ctx)
	if serr := l.saveState(); err == nil {
		err = serr
	}
	if err != nil {
		return l, err
	}
	l.phase("containerd and kubelet started, images imported", begin)

	begin = time.Now()
	if err := l.waitNodes(ctx, "registered", func(*nodeInfo) bool { return true }); err != nil {
		return l, err
	}
	l.phase("nodes registered", begin)

	begin = time.Now()
	if o.BridgeOnly {
		if err := l.installBridge(ctx); err != nil {
			return l, err
		}
		l.phase("bridge conflist installed", begin)
	} else {
		what, err := l.deployNetwork(ctx)
		if err != nil {
			return l, err
		}
		l.phase(what+" DaemonSet Running, NetworkUnavailable False", begin)
	}

	begin = time.Now()
	if err := l.waitNodes(ctx, "Ready", func(n *nodeInfo) bool { return n.ready }); err != nil {
		return l, err
	}
	l.phase("nodes Ready", begin)

	if o.KubeProxy {
		begin = time.Now()
		err := l.startKubeProxies(ctx)
		if serr := l.saveState(); err == nil {
			err = serr
		}
		if err != nil {
			return l, err
		}
		l.phase("kube-proxy healthy on every node", begin)
	}

	begin = time.Now()
	if err := l.deployPods(ctx); err != nil {
		return l, err
	}
	l.phase("test pods Running", begin)
	return l, l.saveState()
}

// lock takes LockFile for the lab, waiting up to LockWait while another
// kubelet lab holds it.
func (l *Lab) lock(ctx context.Context) error {
	deadline := time.Now().Add(l.o.LockWait)
	logged := false
	for {
		holder, stale, err := tryLock(l.o.Name, l.o.Dir)
		if err != nil {
			return fmt.Errorf("kubelet lab lock: %w", err)
		}
		if stale != nil {
			l.log.Warn("took over a stale kubelet lab lock", "lock", LockFile, "was", stale.String())
		}
		if holder == nil {
			return nil
		}
		if !time.Now().Before(deadline) {
			waited := ""
			if l.o.LockWait > 0 {
				waited = fmt.Sprintf(" (waited %v)", l.o.LockWait)
			}
			return fmt.Errorf("%w%s: %s holds %s; only one kubelet lab may be up at a time (they share host mount points "+
				"and sysctls): take it down first", ErrLabRunning, waited, holder, LockFile)
		}
		if !logged {
			l.log.Info("waiting for another kubelet lab to go down", "holder", holder.String(), "for", l.o.LockWait)
			logged = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s to go down: %w", holder, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// saveHost records the host's state before anything changes, and creates
// the mount points hostBinds need.
func (l *Lab) saveHost() error {
	l.host = &hostState{Sysctls: readSysctls()}
	for _, k := range KubeletSysctls {
		if _, ok := l.host.Sysctls[k]; !ok {
			l.log.Warn("sysctl not readable; it is not restored", "key", k)
		}
	}
	for _, p := range globalPaths {
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			l.host.Absent = append(l.host.Absent, p)
		}
	}
	l.host.Netns = netnsEntries()
	for i := range l.o.Nodes {
		l.host.CgroupRoots = append(l.host.CgroupRoots, cgroupRoot(l.o.Name, i+1))
	}
	if err := l.host.save(l.o.Dir); err != nil {
		return err
	}
	for _, b := range hostBinds {
		top, err := ensureDir(b[0])
		if top != "" {
			l.host.Created = append(l.host.Created, top)
			if err := l.host.save(l.o.Dir); err != nil {
				return err
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func cgroupRoot(name string, i int) string { return fmt.Sprintf("/weft-%s-n%d", name, i) }

// controllers are the controller manager's: kubeapi's defaults plus what
// kubelets, a DaemonSet and a Deployment need.
func controllers() []string {
	return append(kubeapi.DefaultControllers(), "node-lifecycle-controller", "daemonset-controller",
		"deployment-controller", "replicaset-controller")
}

func (l *Lab) startControlPlane(ctx context.Context) error {
	topo := l.cl.Lab().Topology()
	ctrl := controllers()
	if l.o.KubeProxy {
		ctrl = append(ctrl, proxyControllers()...)
	}
	var err error
	l.cp, err = kubeapi.Start(ctx, kubeapi.Options{Dir: filepath.Join(l.o.Dir, "kube"), Bins: l.o.Bins.Kube,
		EtcdURL: l.cl.Endpoint(), BindAddress: topo.ServiceAddr(), NetNS: topo.ServiceNS(),
		Controllers: ctrl, Detach: l.o.Detach, Logger: l.log})
	if err != nil {
		return err
	}
	kc := filepath.Join(l.cp.Dir(), "scheduler.kubeconfig")
	if err := l.cp.ClientKubeconfig(kc, "system:kube-scheduler", nil); err != nil {
		return err
	}
	argv := []string{"nsenter", "--net=" + lab.NSPath(topo.ServiceNS()), "--",
		filepath.Join(l.o.Bins.NodeDir, "kube-scheduler"), "--kubeconfig=" + kc, "--leader-elect=false",
		"--secure-port=0", "--v=1"}
	l.sched, err = startProc("kube-scheduler", filepath.Join(l.cp.Dir(), "kube-scheduler.log"), l.o.Detach, nil, argv)
	if err != nil {
		return err
	}
	// The scheduler has no health port here (--secure-port=0); nothing waits
	// for it to be ready: the first pods wait in Pending until it is, and
	// poll fails at once if it exits. This only catches bad flags.
	time.Sleep(200 * time.Millisecond)
	if l.sched.Exited() {
		return l.sched.ExitError()
	}
	return nil
}

// startNodes prepares every node and starts its containerd and kubelet, the
// nodes in parallel.
func (l *Lab) startNodes(ctx context.Context) error {
	topo := l.cl.Lab().Topology()
	tmpl, err := os.ReadFile(l.o.Bins.ContainerdConfig)
	if err != nil {
		return err
	}
	u, err := url.Parse(l.cp.URL())
	if err != nil {
		return err
	}
	svc := netip.AddrPortFrom(netip.MustParseAddr("10.96.0.1"), 443)
	for i, h := range l.cl.Lab().Nodes() {
		var ip netip.Addr
		for _, a := range h.Addrs() {
			if a.Is4() {
				ip = a
				break
			}
		}
		n := &node{i: i + 1, name: ip.String(), ns: h.NS, ip: ip, dir: filepath.Join(l.o.Dir, "nodes", "n"+strconv.Itoa(i+1)),
			cgroupRoot: cgroupRoot(l.o.Name, i+1), detach: l.o.Detach}
		l.nodes = append(l.nodes, n)
	}
	errs := make([]error, len(l.nodes))
	var wg sync.WaitGroup
	for i, n := range l.nodes {
		wg.Go(func() {
			errs[i] = l.startNode(ctx, n, string(tmpl), topo.ServiceAddr(), svc, u.Host)
			if errs[i] != nil {
				errs[i] = fmt.Errorf("node %d (%s): %w", n.i, n.name, errs[i])
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (l *Lab) startNode(ctx context.Context, n *node, tmpl string, sw netip.Addr, svc netip.AddrPort, apiserver string) error {
	for _, d := range []string{"logs", "containerd/root", "containerd/state", "kubelet/pki"} {
		if err := os.MkdirAll(n.path(d), 0o755); err != nil {
			return err
		}
	}
	for _, b := range hostBinds {
		if err := os.MkdirAll(n.path(b[1]), 0o755); err != nil {
			return err
		}
	}
	for _, p := range cniPlugins {
		if err := copyFile(filepath.Join(l.o.Bins.CNIDir, p), filepath.Join(n.path("cni-bin"), p), 0o755); err != nil {
			return err
		}
	}
	if err := makeCgroupRoot(n.cgroupRoot); err != nil {
		return err
	}
	if err := n.prepareNetwork(ctx, sw, svc, apiserver); err != nil {
		return err
	}
	if err := n.startMountNS(ctx); err != nil {
		return err
	}
	if err := n.startContainerd(ctx, l.o.Bins, tmpl); err != nil {
		return err
	}
	images := []string{filepath.Join(l.o.Bins.ImageDir, "pause.tar"), filepath.Join(l.o.Bins.ImageDir, "busybox.tar"),
		l.o.Bins.WeftImage}
	if l.o.Flannel {
		images = append(images, filepath.Join(l.o.Bins.FlannelDir, flannelImage))
	}
	images = append(images, l.o.ExtraImages...)
	for _, img := range images {
		if _, err := n.ctr(ctx, l.o.Bins, "images", "import", "--snapshotter", "overlayfs", img); err != nil {
			return err
		}
	}
	kc := n.path("kubelet.kubeconfig")
	if err := l.cp.ClientKubeconfig(kc, "system:node:"+n.name, []string{"system:nodes"}); err != nil {
		return err
	}
	return n.startKubelet(l.o.Bins, l.cp.CAFile(), kc)
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// imageRef returns the reference an OCI archive names in its index.json.
func imageRef(archive string) (string, error) {
	f, err := os.Open(archive)
	if err != nil {
		return "", err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			return "", fmt.Errorf("%s: no index.json: %w", archive, err)
		}
		if strings.TrimPrefix(h.Name, "./") != "index.json" {
			continue
		}
		var idx struct {
			Manifests []struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"manifests"`
		}
		if err := json.NewDecoder(tr).Decode(&idx); err != nil {
			return "", fmt.Errorf("%s: index.json: %w", archive, err)
		}
		for _, m := range idx.Manifests {
			if r := m.Annotations["org.opencontainers.image.ref.name"]; r != "" {
				return r, nil
			}
		}
		return "", fmt.Errorf("%s: index.json names no image", archive)
	}
}

// imageLine matches the manifest's image references.
var imageLine = regexp.MustCompile(`(?m)^(\s*)image: \S+\s*$`)

// Manifest returns deploy/kube-weft.yml with every image reference set to
// ref and imagePullPolicy Never beside it: the only changes.
func Manifest(ref string) (string, error) {
	return setImages(deploy.Manifest, ref)
}

// setImages returns manifest with every image reference set to ref and
// imagePullPolicy Never beside it.
func setImages(manifest, ref string) (string, error) {
	n := len(imageLine.FindAllString(manifest, -1))
	if n == 0 {
		return "", errors.New("manifest has no image reference")
	}
	return imageLine.ReplaceAllString(manifest, "${1}image: "+ref+"\n${1}imagePullPolicy: Never"), nil
}

// WeftManifest is the file in the lab's directory that holds the manifest
// applied for weft (Manifest of the lab's image), written by Up also when
// Options.Flannel deploys flannel: `kubectl apply -f` of it upgrades that
// lab to weft.
const WeftManifest = "kube-weft.yml"

// flannelManifestFor returns flannel's kube-flannel.yml (Bins.FlannelDir)
// with every image reference set to flannel's image.
func flannelManifestFor(b Bins) (string, error) {
	m, err := os.ReadFile(filepath.Join(b.FlannelDir, flannelManifest))
	if err != nil {
		return "", err
	}
	ref, err := imageRef(filepath.Join(b.FlannelDir, flannelImage))
	if err != nil {
		return "", err
	}
	return setImages(string(m), ref)
}

// deployNetwork applies weft's manifest (or, with Options.Flannel,
// flannel's) and waits for its DaemonSet's pods to run on every node and
// every Node's NetworkUnavailable to be False; it returns which it
// deployed.
func (l *Lab) deployNetwork(ctx context.Context) (string, error) {
	ref, err := imageRef(l.o.Bins.WeftImage)
	if err != nil {
		return "", err
	}
	m, err := Manifest(ref)
	if l.o.NetworkPolicy {
		m, err = setImages(deploy.NetpolManifest, ref)
	}
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(l.o.Dir, WeftManifest), []byte(m), 0o644); err != nil {
		return "", err
	}
	what, file := "weft", "deploy/kube-weft.yml"
	if l.o.NetworkPolicy {
		file = "deploy/kube-weft-netpol.yml"
	}
	if l.o.Flannel {
		what, file = "flannel", filepath.Join(l.o.Bins.FlannelDir, flannelManifest)
		if m, err = flannelManifestFor(l.o.Bins); err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(l.o.Dir, flannelManifest), []byte(m), 0o644); err != nil {
			return "", err
		}
	}
	apply := func() error { return l.cp.Apply(ctx, m) }
	if l.o.Deploy != nil {
		file = "weft (Options.Deploy)"
		apply = func() error { return l.o.Deploy(ctx, l, ref) }
	}
	if err := apply(); err != nil {
		return "", fmt.Errorf("apply %s: %w", file, err)
	}
	return what, l.poll(ctx, what+"'s DaemonSet pods Running and NetworkUnavailable False on every node", func() (bool, string, error) {
		pods, err := l.pods(ctx, WeftNamespace, "app=flannel")
		if err != nil {
			return false, "", err
		}
		nodes, err := l.nodeInfos(ctx)
		if err != nil {
			return false, "", err
		}
		var missing []string
		for _, n := range l.nodes {
			ok := slices.ContainsFunc(pods, func(p podInfo) bool { return p.node == n.name && p.running && p.ready })
			ni := nodes[n.name]
			if !ok || ni == nil || ni.networkUnavailable != "False" {
				st := "?"
				if ni != nil {
					st = ni.networkUnavailable
				}
				missing = append(missing, fmt.Sprintf("%s(pod running=%v, NetworkUnavailable=%s)", n.name, ok, st))
			}
		}
		return len(missing) == 0, strings.Join(missing, " "), nil
	})
}

// testManifest is the test pods' Deployment, one pod per node at most skew 1.
func testManifest(replicas int) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[2]s
  namespace: %[1]s
spec:
  replicas: %[3]d
  selector:
    matchLabels:
      app: %[2]s
  template:
    metadata:
      labels:
        app: %[2]s
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: DoNotSchedule
        labelSelector:
          matchLabels:
            app: %[2]s
      containers:
      - name: busybox
        image: %[4]s
        imagePullPolicy: Never
        command: ["sleep", "86400"]
`, TestNamespace, TestDeployment, replicas, BusyboxImage)
}

func (l *Lab) deployPods(ctx context.Context) error {
	if err := l.cp.Apply(ctx, testManifest(l.o.Replicas)); err != nil {
		return fmt.Errorf("apply the test Deployment: %w", err)
	}
	return l.poll(ctx, "test pods Running", func() (bool, string, error) {
		pods, err := l.pods(ctx, TestNamespace, "app="+TestDeployment)
		if err != nil {
			return false, "", err
		}
		running := 0
		var st []string
		for _, p := range pods {
			if p.running && p.ip.IsValid() {
				running++
			}
			st = append(st, p.Name()+"@"+p.node+":"+p.phase)
		}
		return running == l.o.Replicas, strings.Join(st, " "), nil
	})
}

// TestPods returns the test pods.
func (l *Lab) TestPods(ctx context.Context) ([]podInfo, error) {
	return l.pods(ctx, TestNamespace, "app="+TestDeployment)
}

// PingResult is one ping of the matrix.
type PingResult struct {
	From, To         string // pod names
	FromNode, ToNode string
	Dst              netip.Addr
	RTT              time.Duration // the reply's time, when answered
	Err              error
}

// pingTime is ping's "time=0.123 ms".
var pingTime = regexp.MustCompile(`time=([0-9.]+) ?ms`)

// PingAll runs `kubectl exec <pod> -- ping -c1 -W2 <ip>` from every test pod
// to every other one and returns the results (and an error naming the
// failures).
func (l *Lab) PingAll(ctx context.Context) ([]PingResult, error) {
	pods, err := l.TestPods(ctx)
	if err != nil {
		return nil, err
	}
	var out []PingResult
	var errs []error
	for _, a := range pods {
		for _, b := range pods {
			if a.name == b.name {
				continue
			}
			r := PingResult{From: a.name, To: b.name, FromNode: a.node, ToNode: b.node, Dst: b.ip}
			var got string
			got, r.Err = l.kubectl(ctx, "exec", "-n", TestNamespace, a.name, "--", "ping", "-c1", "-W2", b.ip.String())
			if r.Err != nil {
				errs = append(errs, fmt.Errorf("%s (%s) -> %s (%s, %s): %w", a.name, a.node, b.name, b.node, b.ip, r.Err))
			} else if m := pingTime.FindStringSubmatch(got); m != nil {
				ms, _ := strconv.ParseFloat(m[1], 64)
				r.RTT = time.Duration(ms * float64(time.Millisecond))
			}
			out = append(out, r)
		}
	}
	return out, errors.Join(errs...)
}

// Memory returns the resident set size in kB of every kubelet, containerd
// and of the scheduler, by name ("kubelet n1").
func (l *Lab) Memory() map[string]int {
	out := map[string]int{}
	for _, n := range l.nodes {
		for _, p := range []*proc{n.kubelet, n.containerd, n.proxy} {
			if p != nil && !p.Exited() {
				out[fmt.Sprintf("%s n%d", p.Name(), n.i)] = rssKB(p.Pid())
			}
		}
	}
	if l.sched != nil && !l.sched.Exited() {
		out["kube-scheduler"] = rssKB(l.sched.Pid())
	}
	if l.cp != nil {
		for _, p := range l.cp.Processes() {
			out[p.Name] = rssKB(p.PID)
		}
	}
	return out
}

// Logs returns the tails of every log of the lab (for a failed test).
func (l *Lab) Logs(lines int) string {
	var b strings.Builder
	logs, _ := filepath.Glob(filepath.Join(l.o.Dir, "nodes", "*", "logs", "*.log"))
	more, _ := filepath.Glob(filepath.Join(l.o.Dir, "kube", "*.log"))
	// The DaemonSet's containers (weftd, or flanneld), as kubelet keeps
	// their output: <namespace>_<pod>_<uid>/<container>/<restart>.log.
	pods, _ := filepath.Glob(filepath.Join(l.o.Dir, "nodes", "*", "log-pods", WeftNamespace+"_*", "*", "*.log"))
	for _, p := range slices.Concat(logs, more, pods) {
		b.WriteString(logTail(p, lines))
		b.WriteString("\n")
	}
	return b.String()
}
