//go:build linux

package cluster

// Kube mode (Options.Store == StoreKube): the nodes keep their leases in a
// real Kubernetes API instead of etcd, as weftd --kube-subnet-mgr does in a
// cluster.
//
//   - etcd still runs on the switch: it is the API server's storage.
//   - kube-apiserver and kube-controller-manager (internal/kubeapi) run in
//     the switch namespace and listen on the switch's address, so every node
//     reaches the API as a kubelet would; the controller manager allocates
//     podCIDRs from net-conf.json's Network (and IPv6Network).
//   - The RBAC objects of deploy/kube-weft.yml (the namespace, the
//     ServiceAccount, ClusterRole and ClusterRoleBinding "flannel") are
//     applied as they ship, and every weftd authenticates with a token of
//     that ServiceAccount, so the lab runs on exactly the manifest's
//     permissions, never as an admin.
//   - Each node registers its Node as a kubelet does (name n<i>, InternalIP
//     its underlay address) and waits for its podCIDR before its weftd
//     starts; weftd gets --kube-subnet-mgr, --kubeconfig-file,
//     --net-config-path and NODE_NAME.
//   - <Dir>/kube.json records where kubectl and the admin kubeconfig are, so
//     that another process (`weft lab status`) reads the Nodes.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/weft-net/weft/deploy"
	"github.com/weft-net/weft/internal/atomicfile"
	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/kubeapi"
	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lease"
)

// Stores a cluster can keep its leases in (Options.Store).
const (
	StoreEtcd = "etcd"
	StoreKube = "kube"
)

// Kube mode names.
const (
	// AnnotationPrefix is the prefix of the Node annotations weftd writes.
	AnnotationPrefix = "flannel.alpha.coreos.com/"
	// KubeNamespace and KubeServiceAccount are the manifest's ServiceAccount
	// every weftd authenticates as.
	KubeNamespace      = "kube-flannel"
	KubeServiceAccount = "flannel"
	// kubeTokenTTL is the lifetime of weftd's ServiceAccount token: a lab
	// left running outlives the API server's default hour.
	kubeTokenTTL  = 7 * 24 * time.Hour
	kubeStateFile = "kube.json"
)

// kubeState is <Dir>/kube.json.
type kubeState struct {
	Kubectl    string `json:"kubectl"`
	Kubeconfig string `json:"kubeconfig"` // the admin's
	CacheDir   string `json:"cacheDir"`
	URL        string `json:"url"`
	EtcdPrefix string `json:"etcdPrefix"`
	// WeftdKubeconfig is the ServiceAccount's kubeconfig every weftd uses.
	WeftdKubeconfig string `json:"weftdKubeconfig"`
	NetConfPath     string `json:"netConfPath"`
}

// kubeMode is the cluster's Kubernetes side; nil in etcd mode.
type kubeMode struct {
	cp *kubeapi.ControlPlane // nil when attached to a lab another process built
	st kubeState
}

// IsKube reports whether the cluster keeps its leases in Kubernetes.
func (c *Cluster) IsKube() bool { return c.kube != nil }

// Kube returns the control plane (nil in etcd mode, and for a cluster from
// Attach).
func (c *Cluster) Kube() *kubeapi.ControlPlane {
	if c.kube == nil {
		return nil
	}
	return c.kube.cp
}

// NodeName is node's Node name: its namespace's role, n<i>.
func NodeName(node int) string { return "n" + strconv.Itoa(node) }

// NetConfPath is the net-conf.json file the nodes' weftd read in kube mode.
func (c *Cluster) NetConfPath() string { return filepath.Join(c.o.Dir, "net-conf.json") }

// kubeClusterCIDRs returns net-conf.json's networks and subnet lengths: the
// controller manager's cluster CIDRs and node mask sizes.
func kubeClusterCIDRs(netconf string) ([]netip.Prefix, []int, error) {
	nc, _, err := config.ParseNetConf([]byte(netconf))
	if err != nil {
		return nil, nil, err
	}
	var cidrs []netip.Prefix
	var sizes []int
	for _, f := range nc.Families() {
		cidrs = append(cidrs, f.Network)
		sizes = append(sizes, f.SubnetLen)
	}
	return cidrs, sizes, nil
}

// startKube starts the control plane on the switch, applies the manifest's
// RBAC objects and writes the ServiceAccount's kubeconfig and net-conf.json
// for the nodes.
func (c *Cluster) startKube(ctx context.Context) (retErr error) {
	cidrs, sizes, err := kubeClusterCIDRs(c.o.NetConfJSON())
	if err != nil {
		return fmt.Errorf("kube mode: %w", err)
	}
	topo := c.lab.Topology()
	c.o.progress("starting kube-apiserver and kube-controller-manager on %s (cluster CIDRs %v)", topo.ServiceAddr(), cidrs)
	cp, err := kubeapi.Start(ctx, kubeapi.Options{
		Dir: filepath.Join(c.o.Dir, "kube"), Bins: c.o.KubeBins, EtcdURL: c.endpoint,
		BindAddress: topo.ServiceAddr(), ClusterCIDRs: cidrs, NodeCIDRMaskSizes: sizes,
		NetNS: c.swNS, Detach: c.o.Detach, Logger: c.log,
	})
	if err != nil {
		return fmt.Errorf("start kubernetes control plane: %w", err)
	}
	c.kube = &kubeMode{cp: cp, st: kubeState{
		Kubectl: c.o.KubeBins.Kubectl, Kubeconfig: cp.AdminKubeconfig(), CacheDir: filepath.Join(cp.Dir(), "kubectl-cache"),
		URL: cp.URL(), EtcdPrefix: cp.EtcdPrefix(), NetConfPath: c.NetConfPath(),
	}}
	if c.kube.st.Kubectl == "" {
		bins, err := kubeapi.Binaries("")
		if err != nil {
			return err
		}
		c.kube.st.Kubectl = bins.Kubectl
	}
	manifest := c.o.Manifest
	if manifest == "" {
		manifest = deploy.Manifest
	}
	rbac, err := deploy.RBACOf(manifest)
	if err != nil {
		return err
	}
	c.o.progress("applying the RBAC objects of deploy/kube-weft.yml (ServiceAccount %s/%s)", KubeNamespace, KubeServiceAccount)
	if err := cp.Apply(ctx, rbac); err != nil {
		return fmt.Errorf("apply the manifest's RBAC objects: %w", err)
	}
	if c.kube.st.WeftdKubeconfig, err = cp.ServiceAccountKubeconfig(ctx, KubeNamespace, KubeServiceAccount, kubeTokenTTL); err != nil {
		return err
	}
	if err := atomicfile.Write(c.NetConfPath(), []byte(c.o.NetConfJSON()+"\n"), 0o644); err != nil {
		return fmt.Errorf("write net-conf.json: %w", err)
	}
	data, _ := json.MarshalIndent(c.kube.st, "", "  ")
	if err := atomicfile.Write(filepath.Join(c.o.Dir, kubeStateFile), append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write kube state: %w", err)
	}
	return nil
}

// attachKube loads <Dir>/kube.json when the lab runs in kube mode.
func (c *Cluster) attachKube() error {
	data, err := os.ReadFile(filepath.Join(c.o.Dir, kubeStateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	k := &kubeMode{}
	if err := json.Unmarshal(data, &k.st); err != nil {
		return fmt.Errorf("decode %s: %w", kubeStateFile, err)
	}
	c.kube = k
	return nil
}

// Kubectl runs kubectl as the admin, inside the switch namespace (the only
// place besides the nodes that reaches the API server), with stdin when not
// nil, and returns its standard output.
func (c *Cluster) Kubectl(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	if c.kube == nil {
		return "", errors.New("not a kube-mode lab")
	}
	st := c.kube.st
	argv := append([]string{"--kubeconfig=" + st.Kubeconfig, "--cache-dir=" + st.CacheDir}, args...)
	cmd := exec.CommandContext(ctx, st.Kubectl, argv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &stdout, &stderr
	err := lab.StartIn(c.swNS, cmd)
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// KubeObject applies a JSON or YAML object (or several) as the admin with
// `kubectl create` when create is set, else `kubectl apply`.
func (c *Cluster) KubeObject(ctx context.Context, create bool, manifest string) error {
	verb := "apply"
	if create {
		verb = "create"
	}
	_, err := c.Kubectl(ctx, strings.NewReader(manifest), verb, "-f", "-")
	return err
}

// GetNode reads the Node name.
func (c *Cluster) GetNode(ctx context.Context, name string) (*corev1.Node, error) {
	out, err := c.Kubectl(ctx, nil, "get", "node", name, "-o", "json")
	if err != nil {
		return nil, err
	}
	var n corev1.Node
	if err := json.Unmarshal([]byte(out), &n); err != nil {
		return nil, fmt.Errorf("decode node %s: %w", name, err)
	}
	return &n, nil
}

// RegisterNode creates node's Node as a kubelet registers it: name n<i>,
// labels kubernetes.io/hostname and kubernetes.io/os, status addresses
// InternalIP (each underlay address) and Hostname.
func (c *Cluster) RegisterNode(ctx context.Context, node int) error {
	h, err := c.lab.Node(node)
	if err != nil {
		return err
	}
	name := NodeName(node)
	obj := map[string]any{"apiVersion": "v1", "kind": "Node", "metadata": map[string]any{"name": name,
		"labels": map[string]string{"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}}}
	b, _ := json.Marshal(obj)
	if err := c.KubeObject(ctx, true, string(b)); err != nil {
		return fmt.Errorf("register node %s: %w", name, err)
	}
	addrs := []corev1.NodeAddress{}
	for _, a := range h.Addrs() {
		addrs = append(addrs, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a.String()})
	}
	addrs = append(addrs, corev1.NodeAddress{Type: corev1.NodeHostName, Address: name})
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{"addresses": addrs}})
	if _, err := c.Kubectl(ctx, nil, "patch", "node", name, "--subresource=status", "--type=merge", "-p", string(patch)); err != nil {
		return fmt.Errorf("node %s status addresses: %w", name, err)
	}
	return nil
}

// DeleteNode deletes node's Node (weftd is left alone).
func (c *Cluster) DeleteNode(ctx context.Context, node int) error {
	_, err := c.Kubectl(ctx, nil, "delete", "node", NodeName(node), "--wait=false")
	return err
}

// PodCIDRs returns the podCIDRs of node's Node (none yet: an empty slice).
func (c *Cluster) PodCIDRs(ctx context.Context, node int) ([]netip.Prefix, error) {
	n, err := c.GetNode(ctx, NodeName(node))
	if err != nil {
		return nil, err
	}
	return podCIDRs(n)
}

func podCIDRs(n *corev1.Node) ([]netip.Prefix, error) {
	s := n.Spec.PodCIDRs
	if len(s) == 0 && n.Spec.PodCIDR != "" {
		s = []string{n.Spec.PodCIDR}
	}
	var out []netip.Prefix
	for _, p := range s {
		pfx, err := netip.ParsePrefix(p)
		if err != nil {
			return nil, fmt.Errorf("node %s: podCIDR %q: %w", n.Name, p, err)
		}
		out = append(out, pfx)
	}
	return out, nil
}

// WaitPodCIDR waits until the controller manager has given node's Node a
// podCIDR per family of the network.
func (c *Cluster) WaitPodCIDR(ctx context.Context, node int) ([]netip.Prefix, error) {
	cidrs, _, err := kubeClusterCIDRs(c.o.NetConfJSON())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		got, err := c.PodCIDRs(ctx, node)
		if err == nil && len(got) == len(cidrs) {
			return got, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("node %s has no podCIDR after 30 s (%v): %w", NodeName(node), err, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// kubeLease reads node's lease from its Node: podCIDRs and annotations.
func (c *Cluster) kubeLease(ctx context.Context, node int) (lease.Lease, error) {
	n, err := c.GetNode(ctx, NodeName(node))
	if err != nil {
		return lease.Lease{}, err
	}
	return NodeLease(n)
}

// NodeLease turns a Node into the lease weftd published in it (flannel's
// annotations); a Node weftd does not manage is an error.
func NodeLease(n *corev1.Node) (lease.Lease, error) {
	ann := func(k string) string { return n.Annotations[AnnotationPrefix+k] }
	if ann("kube-subnet-manager") != "true" {
		return lease.Lease{}, fmt.Errorf("node %s: not managed by weft (no %skube-subnet-manager)", n.Name, AnnotationPrefix)
	}
	cidrs, err := podCIDRs(n)
	if err != nil {
		return lease.Lease{}, err
	}
	var l lease.Lease
	for _, p := range cidrs {
		if p.Addr().Is4() {
			l.Subnet = p
		} else {
			l.IPv6Subnet = p
		}
	}
	l.Attrs.BackendType = ann("backend-type")
	for _, a := range []struct {
		key string
		to  *netip.Addr
	}{{"public-ip", &l.Attrs.PublicIP}, {"public-ipv6", &l.Attrs.PublicIPv6}} {
		if v := ann(a.key); v != "" {
			if *a.to, err = netip.ParseAddr(v); err != nil {
				return lease.Lease{}, fmt.Errorf("node %s: %s: %w", n.Name, a.key, err)
			}
		}
	}
	if v := ann("backend-data"); v != "" && v != "null" {
		l.Attrs.BackendData = json.RawMessage(v)
	}
	if v := ann("backend-v6-data"); v != "" && v != "null" {
		l.Attrs.BackendV6Data = json.RawMessage(v)
	}
	return l, nil
}
