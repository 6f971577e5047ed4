//go:build linux

package bench

// The Kubernetes store's control plane: the same join and latency figures as
// the etcd part, with weftd --kube-subnet-mgr reading N Node objects from a
// real kube-apiserver.
//
// # Design notes
//
//   - kube-apiserver and kube-controller-manager (internal/kubeapi, `make
//     kube-bins`) run in the lab's switch namespace on the lab's etcd, as the
//     etcd store's etcd does; the controller manager runs node-ipam only (the
//     bench gives every Node its podCIDR itself). Missing binaries skip the
//     part with one line, never fail the bench.
//   - The Nodes are what a kubelet-registered, flannel-annotated Node looks
//     like (kubeNode): labels, flannel's annotations and podCIDR, a status
//     with conditions, addresses, node info and images, and managedFields of
//     the kubelet, the controller manager and flanneld, about 7 KB of JSON
//     each: kube-flannel users' OOMs come from whole Node objects, so the
//     bench must not hand weftd slim ones. They are created in parallel as
//     system:masters (exempt from API Priority and Fairness) with client-side
//     throttling off.
//   - weftd runs in n3 with the ServiceAccount and ClusterRole of
//     deploy/kube-weft.yml (deploy.RBAC), its own Node carrying a podCIDR, and
//     starts every time from a clean kernel and without its peer snapshot.
//   - Each figure has a baseline from the same run: the join against the
//     same objects written with batched netlink (the etcd part's), and
//     against a bare paged list of the same Nodes through client-go's REST
//     client (protobuf, pages of 100, as weftd lists) plus those writes; a
//     new Node's route against the create's round trip plus a direct route
//     write; RSS against an idle kube-mode weftd; CPU against the bare list.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/weft-net/weft/deploy"
	"github.com/weft-net/weft/internal/kubeapi"
	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/cluster"
)

// kubeOwnNode is the joining node's Node; kubeOwnCIDR its podCIDR, outside
// the simulated peers' /24s (simPeers counts up from 10.0.1.0).
const (
	kubeOwnNode = "weft-bench-n3"
	kubeOwnCIDR = "10.250.0.0/24"
)

// kubeEnv is the running control plane and what the bench made in it.
type kubeEnv struct {
	cp      *kubeapi.ControlPlane
	api     *kubeClient
	dir     string
	saConf  string // weftd's kubeconfig (the manifest's ServiceAccount)
	netConf string // weftd's --net-config-path
	weftd   *kubeWeftd
	created int // simulated Nodes in the API (sims[:created])
}

// startKube starts the control plane in the switch namespace, applies the
// manifest's RBAC, creates the joining node's Node and writes weftd's files.
func (b *bench) startKube(ctx context.Context, bins kubeapi.Bins) (_ *kubeEnv, retErr error) {
	topo := b.c.Lab().Topology()
	k := &kubeEnv{dir: filepath.Join(b.o.Dir, "kube")}
	defer func() {
		if retErr != nil {
			retErr = errors.Join(retErr, k.close())
		}
	}()
	var err error
	k.cp, err = kubeapi.Start(ctx, kubeapi.Options{
		Dir: filepath.Join(k.dir, "control-plane"), Bins: bins, EtcdURL: b.c.Endpoint(),
		NetNS: topo.ServiceNS(), BindAddress: topo.ServiceAddr(),
		ClusterCIDRs: clusterNetwork(), NodeCIDRMaskSizes: []int{24},
		Controllers: []string{"node-ipam-controller"}, Logger: b.o.Logger,
	})
	if err != nil {
		return nil, err
	}
	var rbac string
	rbac, err = deploy.RBAC()
	if err != nil {
		return nil, err
	}
	if err := k.cp.Apply(ctx, rbac); err != nil {
		return nil, fmt.Errorf("apply the manifest's RBAC: %w", err)
	}
	if k.saConf, err = k.cp.ServiceAccountKubeconfig(ctx, "kube-flannel", "flannel", 2*time.Hour); err != nil {
		return nil, err
	}
	if k.api, err = newKubeClient(k.cp.AdminKubeconfig(), topo.ServiceNS()); err != nil {
		return nil, err
	}
	host, err := b.c.Lab().Node(joinNode)
	if err != nil {
		return nil, err
	}
	if err := k.api.create(ctx, kubeNode(kubeOwnNode, kubeOwnCIDR, host.Addrs()[0].String(), 0, nil)); err != nil {
		return nil, fmt.Errorf("create node %s: %w", kubeOwnNode, err)
	}
	k.netConf = filepath.Join(k.dir, "net-conf.json")
	if err := os.WriteFile(k.netConf, []byte(b.current.NetConf()), 0o644); err != nil {
		return nil, fmt.Errorf("write %s: %w", k.netConf, err)
	}
	return k, nil
}

// close stops weftd and the control plane (whose objects die with the lab's
// etcd).
func (k *kubeEnv) close() error {
	var errs []error
	if k.weftd != nil {
		errs = append(errs, k.weftd.stop())
	}
	if k.api != nil {
		k.api.close()
	}
	if k.cp != nil {
		errs = append(errs, k.cp.Stop())
	}
	return errors.Join(errs...)
}

// kubeWeftd is a weftd in kube mode on the joining node.
type kubeWeftd struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	log  string
	// execAt is when it was started: a join is timed from here, after
	// the clean-up before it.
	execAt time.Time
}

// subnetFile is the kube-mode weftd's subnet.env (its peer snapshot beside).
func (k *kubeEnv) subnetFile() string { return filepath.Join(k.dir, "n3", "subnet.env") }

// startWeftd starts weftd --kube-subnet-mgr on the joining node, from a
// clean kernel state and without a peer snapshot.
func (b *bench) startKubeWeftd(ctx context.Context, k *kubeEnv) error {
	if err := b.stopKubeWeftd(ctx, k); err != nil {
		return err
	}
	sf := k.subnetFile()
	if err := os.MkdirAll(filepath.Dir(sf), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(sf), err)
	}
	for _, f := range []string{sf, sf + ".peers.json"} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", f, err)
		}
	}
	w := &kubeWeftd{done: make(chan struct{}), log: filepath.Join(filepath.Dir(sf), "weftd.log")}
	logf, err := os.OpenFile(w.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open weftd log: %w", err)
	}
	w.cmd = exec.Command(filepath.Join(b.o.BinDir, "weftd"), "--kube-subnet-mgr", "--kubeconfig-file", k.saConf,
		"--net-config-path", k.netConf, "--iface", lab.NodeIface, "--subnet-file", sf,
		"--healthz-port", strconv.Itoa(cluster.HealthPort), "--healthz-ip", "0.0.0.0")
	w.cmd.Env = append(os.Environ(), "NODE_NAME="+kubeOwnNode)
	w.cmd.Stdout, w.cmd.Stderr = logf, logf
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	w.execAt = time.Now()
	if err := lab.StartIn(b.c.NodeNS(joinNode), w.cmd); err != nil {
		logf.Close()
		return fmt.Errorf("start kube-mode weftd on n%d: %w", joinNode, err)
	}
	go func() {
		w.err = w.cmd.Wait()
		logf.Close()
		close(w.done)
	}()
	k.weftd = w
	return nil
}

// waitReady waits until the kube-mode weftd answers /readyz, failing early
// when it exits.
func (b *bench) waitKubeReady(ctx context.Context, w *kubeWeftd) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-w.done:
			return fmt.Errorf("kube-mode weftd exited (%v); see %s", w.err, w.log)
		default:
		}
		if ok, _ := b.c.Ready(ctx, joinNode); ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return fmt.Errorf("kube-mode weftd not ready after 60 s; see %s", w.log)
}

// stopKubeWeftd stops the kube-mode weftd, if any, and removes the backend's
// kernel state from the joining node.
func (b *bench) stopKubeWeftd(ctx context.Context, k *kubeEnv) error {
	if k.weftd != nil {
		if err := k.weftd.stop(); err != nil {
			return err
		}
		k.weftd = nil
	}
	_, _ = b.cleanBackend(ctx, joinNode) // most objects do not exist
	return nil
}

// stop sends SIGTERM and waits; SIGKILL after 15 s.
func (w *kubeWeftd) stop() error {
	select {
	case <-w.done:
		return nil
	default:
	}
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("signal kube-mode weftd: %w", err)
	}
	select {
	case <-w.done:
		return nil
	case <-time.After(15 * time.Second):
		_ = w.cmd.Process.Kill()
		<-w.done
		return errors.New("kube-mode weftd did not stop after SIGTERM")
	}
}

func (w *kubeWeftd) pid() int { return w.cmd.Process.Pid }
