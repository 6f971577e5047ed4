//go:build linux

package kubelet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/weft-net/weft/internal/lab"
)

// hostBinds are the host paths each node's mount namespace binds a
// directory of its own over (target -> the node directory's subdirectory):
// the manifest's hostPaths (/run/flannel, /etc/cni/net.d, /opt/cni/bin), the
// host-local IPAM state, containerd's default run directory (the shims'
// sockets go to /run/containerd/s, and ctr's fifos) and kubelet's log
// directories, whose paths are fixed.
var hostBinds = [][2]string{
	{"/run/flannel", "run-flannel"},
	{"/etc/cni/net.d", "cni-conf"},
	{"/opt/cni/bin", "cni-bin"},
	{"/var/lib/cni", "var-lib-cni"},
	{"/run/containerd", "run-containerd"},
	{"/var/log/pods", "log-pods"},
	{"/var/log/containers", "log-containers"},
	// The device manager's socket directory is fixed, whatever --root-dir.
	{"/var/lib/kubelet/device-plugins", "device-plugins"},
	// containerd's pod network namespaces: the bind mounts are the node's,
	// but their empty mount-point files would be left on the host's /run.
	{"/run/netns", "netns"},
}

// cniPlugins are the reference plugins a node provides (weft's init
// container installs only its own, as flannel's does).
var cniPlugins = []string{"bridge", "host-local", "loopback", "portmap"}

// containerdSocket is containerd's socket inside a node's mount namespace
// (the default path, so that cAdvisor and ctr find it there too).
const containerdSocket = "/run/containerd/containerd.sock"

// node is one lab node turned into a Kubernetes node.
type node struct {
	i          int
	name       string // the Node's name: its underlay IPv4 address
	ns         string // its network namespace
	ip         netip.Addr
	dir        string
	cgroupRoot string
	detach     bool // start its processes detached (Options.Detach)

	holder, containerd, kubelet *proc
	proxy                       *proc  // kube-proxy (Options.KubeProxy), else nil
	mntNS                       uint64 // inode of its mount namespace
}

func (n *node) path(sub string) string { return filepath.Join(n.dir, sub) }

// procs returns the node's processes that were started.
func (n *node) procs() []*proc {
	var out []*proc
	for _, p := range []*proc{n.holder, n.containerd, n.kubelet, n.proxy} {
		if p != nil {
			out = append(out, p)
		}
	}
	return out
}

// hostSocket is the containerd socket as seen from the host.
func (n *node) hostSocket() string { return filepath.Join(n.path("run-containerd"), "containerd.sock") }

// nsenter returns the argv prefix that runs a program in the node's network
// and mount namespaces.
func (n *node) nsenter() []string {
	return []string{"nsenter", "--net=" + lab.NSPath(n.ns), "--mount=/proc/" + strconv.Itoa(n.holder.Pid()) + "/ns/mnt", "--"}
}

// prepareNetwork gives the node namespace a default route (weftd picks the
// default route's interface) through the switch's address, when it has none,
// and a DNAT of the kubernetes Service's address to the apiserver (what
// kube-proxy would do: weftd's in-cluster configuration dials
// KUBERNETES_SERVICE_HOST:PORT).
func (n *node) prepareNetwork(ctx context.Context, sw netip.Addr, svc netip.AddrPort, apiserver string) error {
	out, err := exec.CommandContext(ctx, "ip", "-n", n.ns, "route", "show", "default").CombinedOutput()
	if err != nil {
		return fmt.Errorf("routes of %s: %w: %s", n.ns, err, out)
	}
	if strings.TrimSpace(string(out)) == "" {
		if out, err := exec.CommandContext(ctx, "ip", "-n", n.ns, "route", "add", "default", "via", sw.String(),
			"dev", lab.NodeIface).CombinedOutput(); err != nil {
			return fmt.Errorf("default route in %s: %w: %s", n.ns, err, out)
		}
	}
	argv := []string{"nsenter", "--net=" + lab.NSPath(n.ns), "--", "iptables", "-w", "-t", "nat", "-A", "OUTPUT",
		"-d", svc.Addr().String() + "/32", "-p", "tcp", "--dport", strconv.Itoa(int(svc.Port())),
		"-j", "DNAT", "--to-destination", apiserver, "-m", "comment", "--comment", "weft lab: kubernetes service"}
	if out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("service DNAT in %s: %w: %s", n.ns, err, out)
	}
	return nil
}

// startMountNS starts the process that holds the node's mount namespace: a
// copy of the host's (slave: the host's later mounts still propagate in,
// none of the node's propagates out) with the node's directories bound over
// hostBinds. It runs in the node's network namespace, so `weft lab down`
// finds it as it finds every process of the lab.
func (n *node) startMountNS(ctx context.Context) error {
	script := "set -e\n"
	args := []string{}
	for i, b := range hostBinds {
		script += fmt.Sprintf("mount --bind \"$%d\" %s\n", i+1, b[0])
		args = append(args, n.path(b[1]))
	}
	script += "echo ready\nexec sleep infinity\n"
	argv := append([]string{"nsenter", "--net=" + lab.NSPath(n.ns), "--", "unshare", "--mount", "--propagation", "slave",
		"--", "sh", "-c", script, "mountns"}, args...)
	logPath := n.path("logs/mountns.log")
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	p, err := startProcOut("mountns", logPath, n.detach, w, argv)
	w.Close()
	if err != nil {
		return err
	}
	n.holder = p
	got := make(chan string, 1)
	go func() {
		b := make([]byte, 64)
		k, _ := io.ReadAtLeast(r, b, 6)
		got <- string(b[:k])
	}()
	select {
	case s := <-got:
		if !strings.HasPrefix(s, "ready") {
			<-p.Done()
			return fmt.Errorf("node %s mount namespace: %w", n.name, p.ExitError())
		}
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(10 * time.Second):
		return fmt.Errorf("node %s mount namespace not ready after 10s\n%s", n.name, logTail(logPath, 10))
	}
	n.mntNS = nsIno("/proc/" + strconv.Itoa(p.Pid()) + "/ns/mnt")
	return nil
}

// startProcOut is startProc with standard output to out.
func startProcOut(name, logPath string, detach bool, out *os.File, argv []string) (*proc, error) {
	p, err := startProcHook(name, logPath, detach, nil, argv, func(c *exec.Cmd) { c.Stdout = out })
	return p, err
}

// startContainerd writes the node's containerd configuration from the
// template and starts containerd in the node's namespaces, then waits until
// it answers.
func (n *node) startContainerd(ctx context.Context, b Bins, tmpl string) error {
	cfg := strings.NewReplacer(
		"{{ROOT}}", n.path("containerd/root"),
		"{{STATE}}", n.path("containerd/state"),
		"{{SOCKET}}", containerdSocket,
		"{{CNI_BIN}}", "/opt/cni/bin",
		"{{CNI_CONF}}", "/etc/cni/net.d",
		"{{SNAPSHOTTER}}", "overlayfs",
	).Replace(tmpl)
	cfgPath := n.path("containerd/config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	argv := append(n.nsenter(), filepath.Join(b.ContainerdDir, "containerd"), "--config", cfgPath)
	p, err := startProc("containerd", n.path("logs/containerd.log"), n.detach, []string{"PATH=" + b.ContainerdDir + ":" + os.Getenv("PATH")}, argv)
	if err != nil {
		return err
	}
	n.containerd = p
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("unix", n.hostSocket()); err == nil {
			c.Close()
			if _, err := n.ctr(ctx, b, "version"); err == nil {
				return nil
			}
		}
		if p.Exited() {
			return p.ExitError()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd of node %s not answering after 30s\n%s", n.name, logTail(p.Log(), 20))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ctr runs ctr against the node's containerd (from the host: only the
// socket is used) in the k8s.io namespace.
func (n *node) ctr(ctx context.Context, b Bins, args ...string) (string, error) {
	argv := append([]string{"-a", n.hostSocket(), "-n", "k8s.io"}, args...)
	out, err := exec.CommandContext(ctx, filepath.Join(b.ContainerdDir, "ctr"), argv...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// kubeletConfig is the KubeletConfiguration of a node.
func (n *node) kubeletConfig(caFile string) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This host has cgroup v1 only.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %s
cgroupsPerQOS: true
containerRuntimeEndpoint: unix://%s
address: %s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
# The apiserver presents no client certificate to kubelets (it has no
# --kubelet-client-certificate): exec and logs come in anonymous, and only
# from inside the lab's namespaces.
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
  x509:
    clientCAFile: %s
authorization:
  mode: AlwaysAllow
rotateCertificates: false
serverTLSBootstrap: false
failSwapOn: false
resolvConf: /etc/resolv.conf
hairpinMode: hairpin-veth
maxPods: 32
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%%
  nodefs.inodesFree: 1%%
  imagefs.available: 1%%
# enableControllerAttachDetach is left at its default (true), as in every
# cluster: kubelet registers its Node with the annotation
# volumes.kubernetes.io/controller-managed-attach-detach, so no Node is
# without annotations (flanneld v0.28.9 panics on a nil annotation map). The
# lab's volumes (configMap, hostPath, projected) are not attachable: they
# need no attach/detach controller.
containerLogMaxSize: 1Mi
containerLogMaxFiles: 2
`, n.cgroupRoot, containerdSocket, n.ip, caFile)
}

// startKubelet writes the node's kubelet configuration and starts kubelet in
// the node's namespaces.
func (n *node) startKubelet(b Bins, caFile, kubeconfig string) error {
	cfgPath := n.path("kubelet-config.yaml")
	if err := os.WriteFile(cfgPath, []byte(n.kubeletConfig(caFile)), 0o644); err != nil {
		return err
	}
	argv := append(n.nsenter(), filepath.Join(b.NodeDir, "kubelet"),
		"--config="+cfgPath,
		"--kubeconfig="+kubeconfig,
		"--hostname-override="+n.name,
		"--node-ip="+n.ip.String(),
		"--root-dir="+n.path("kubelet"),
		"--cert-dir="+n.path("kubelet/pki"),
		"--v=1",
	)
	p, err := startProc("kubelet", n.path("logs/kubelet.log"), n.detach, []string{"PATH=" + b.ContainerdDir + ":" + os.Getenv("PATH")}, argv)
	if err != nil {
		return err
	}
	n.kubelet = p
	return nil
}

// stop stops kube-proxy (when it runs) and kubelet, kills every process in
// the node's cgroup root (the pods), stops containerd, kills what is left in
// the node's network namespace (the shims) and the mount namespace's holder,
// and removes the cgroups.
func (n *node) stop() error {
	var errs []error
	if n.proxy != nil {
		errs = append(errs, n.proxy.Stop(5*time.Second))
	}
	errs = append(errs, n.kubelet.Stop(5*time.Second))
	errs = append(errs, killCgroup(n.cgroupRoot, 15*time.Second))
	errs = append(errs, n.containerd.Stop(5*time.Second))
	errs = append(errs, killNetNS(n.ns, 10*time.Second))
	errs = append(errs, n.holder.Stop(0))
	errs = append(errs, removeCgroup(n.cgroupRoot, 10*time.Second))
	return errors.Join(errs...)
}

// killNetNS SIGKILLs every process in network namespace ns until none is
// left.
func killNetNS(ns string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pids, err := lab.Processes(ns)
		if err != nil {
			if _, serr := os.Stat(lab.NSPath(ns)); errors.Is(serr, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("netns %s: processes %v left after %v", ns, pids, timeout)
		}
		for _, pid := range pids {
			_ = killPid(pid)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
