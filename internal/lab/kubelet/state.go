//go:build linux

package kubelet

// <Dir>/kubelet.json: what another process needs to find a lab again (`weft
// lab status`, `exec`, `down` of a detached lab): its nodes, how to run
// kubectl against its apiserver, and every process Up started, by pid and
// start time (a pid alone may be reused). Up writes it after the control
// plane started, after the nodes started and at the end.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weft-net/weft/internal/atomicfile"
	"github.com/weft-net/weft/internal/lab"
)

const labStateFile = "kubelet.json"

// labState is <Dir>/kubelet.json.
type labState struct {
	Name     string `json:"name"`
	Dir      string `json:"dir"`
	Detached bool   `json:"detached"`
	// SwitchNS is the namespace the apiserver listens in (kubectl runs
	// there).
	SwitchNS     string      `json:"switchNS"`
	Kubectl      string      `json:"kubectl"`
	Kubeconfig   string      `json:"kubeconfig"` // the admin's
	KubectlCache string      `json:"kubectlCache"`
	Nodes        []nodeState `json:"nodes"`
	Processes    []ProcState `json:"processes"`
	Phases       []Phase     `json:"phases"`
}

type nodeState struct {
	Index      int        `json:"index"`
	Name       string     `json:"name"` // the Node's name
	NS         string     `json:"ns"`
	IP         netip.Addr `json:"ip"`
	Dir        string     `json:"dir"`
	CgroupRoot string     `json:"cgroupRoot"`
	MntNS      uint64     `json:"mntNS"` // inode of its mount namespace
}

// ProcState is a process of the lab as kubelet.json records it.
type ProcState struct {
	Name  string `json:"name"`
	Node  int    `json:"node,omitempty"` // 1-based; 0 for the control plane
	PID   int    `json:"pid"`
	Start uint64 `json:"start"` // its start time, in clock ticks after boot
	Log   string `json:"log,omitempty"`
}

// Running reports whether the process is still the one recorded (same pid
// and start time, not a zombie).
func (p ProcState) Running() bool { return pidAlive(p.PID, p.Start) }

// saveState writes kubelet.json from what runs now.
func (l *Lab) saveState() error {
	st := labState{Name: l.o.Name, Dir: l.o.Dir, Detached: l.o.Detach, Phases: l.Phases()}
	if l.cl != nil {
		st.SwitchNS = l.cl.Lab().Topology().ServiceNS()
		if l.o.Detach {
			// cluster.Up's etcd process (EtcdCommand): the process in the
			// switch namespace run as `weft-lab etcd ...`.
			pids, _ := lab.Processes(st.SwitchNS)
			for _, pid := range pids {
				b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
				if args := bytes.Split(b, []byte{0}); len(args) > 1 && string(args[1]) == "etcd" {
					st.Processes = append(st.Processes, procState("etcd", 0, pid, filepath.Join(l.o.Dir, "cluster", "etcd.log")))
				}
			}
		}
	}
	if l.cp != nil {
		st.Kubectl = l.o.Bins.Kube.Kubectl
		st.Kubeconfig = l.cp.AdminKubeconfig()
		st.KubectlCache = filepath.Join(l.cp.Dir(), "kubectl-cache")
		for _, p := range l.cp.Processes() {
			st.Processes = append(st.Processes, procState(p.Name, 0, p.PID, p.Log))
		}
	}
	if l.sched != nil {
		st.Processes = append(st.Processes, procState(l.sched.Name(), 0, l.sched.Pid(), l.sched.Log()))
	}
	for _, n := range l.nodes {
		st.Nodes = append(st.Nodes, nodeState{Index: n.i, Name: n.name, NS: n.ns, IP: n.ip, Dir: n.dir,
			CgroupRoot: n.cgroupRoot, MntNS: n.mntNS})
		for _, p := range n.procs() {
			st.Processes = append(st.Processes, procState(p.Name(), n.i, p.Pid(), p.Log()))
		}
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	return atomicfile.Write(filepath.Join(l.o.Dir, labStateFile), append(b, '\n'), 0o600)
}

func procState(name string, node, pid int, log string) ProcState {
	start, _ := pidStart(pid)
	return ProcState{Name: name, Node: node, PID: pid, Start: start, Log: log}
}

func loadLabState(dir string) (*labState, error) { return loadJSON[labState](dir, labStateFile) }

// IsLab reports whether lab name in dir is (or was, half made or half
// removed) a kubelet lab: its directory has kubelet.json or host.json, or
// the lock names it. Purge removes such a lab.
func IsLab(name, dir string) bool {
	for _, f := range []string{labStateFile, hostStateFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return true
		}
	}
	return lockedBy(name, dir)
}

// Attach returns the lab another process brought up in dir, from its
// kubelet.json and host.json: enough to read its Nodes and pods (Status,
// TestPods, PingAll), find its processes (Processes, NodeCommand) and check
// what is left after Purge (Leftovers). It starts and stops nothing.
func Attach(log *slog.Logger, name, dir string) (*Lab, error) {
	if err := lab.ValidateName(name); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st, err := loadLabState(dir)
	if err != nil {
		return nil, fmt.Errorf("kubelet lab %s: %w", name, err)
	}
	if st.Name != name {
		return nil, fmt.Errorf("kubelet lab %s: %s names lab %q", name, filepath.Join(dir, labStateFile), st.Name)
	}
	host, err := loadHostState(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	l := &Lab{o: Options{Name: name, Dir: dir, Nodes: len(st.Nodes), Detach: st.Detached},
		log: log.With("component", "kubelet-lab", "lab", name), host: host, state: st, phases: st.Phases}
	for _, n := range st.Nodes {
		l.nodes = append(l.nodes, &node{i: n.Index, name: n.Name, ns: n.NS, ip: n.IP, dir: n.Dir, cgroupRoot: n.CgroupRoot,
			mntNS: n.MntNS})
	}
	return l, nil
}

// Processes returns the processes Up started, as kubelet.json recorded them
// (for a lab this process brought up: as they are now).
func (l *Lab) Processes() []ProcState {
	if l.state != nil {
		return slices.Clone(l.state.Processes)
	}
	var out []ProcState
	if l.cp != nil {
		for _, p := range l.cp.Processes() {
			out = append(out, procState(p.Name, 0, p.PID, p.Log))
		}
	}
	if l.sched != nil && !l.sched.Exited() {
		out = append(out, procState(l.sched.Name(), 0, l.sched.Pid(), l.sched.Log()))
	}
	for _, n := range l.nodes {
		for _, p := range n.procs() {
			if !p.Exited() {
				out = append(out, procState(p.Name(), n.i, p.Pid(), p.Log()))
			}
		}
	}
	return out
}

// kubectl runs kubectl as the admin in the switch namespace and returns its
// standard output: through the ControlPlane of a lab this process brought up,
// else as kubelet.json says.
func (l *Lab) kubectl(ctx context.Context, args ...string) (string, error) {
	if l.cp != nil {
		return l.cp.Kubectl(ctx, args...)
	}
	st := l.state
	if st == nil || st.Kubectl == "" {
		return "", errors.New("kubelet lab: no control plane")
	}
	argv := append([]string{"--kubeconfig=" + st.Kubeconfig, "--cache-dir=" + st.KubectlCache}, args...)
	cmd := exec.CommandContext(ctx, st.Kubectl, argv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := lab.StartIn(st.SwitchNS, cmd)
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// KubectlCommand returns a command that runs kubectl as the admin with args
// in the switch namespace (`ip netns exec`), for a terminal (`weft lab exec
// <lab> n1-p1 -- sh`).
func (l *Lab) KubectlCommand(ctx context.Context, args ...string) (*exec.Cmd, error) {
	kubectl, kc, cache, ns := "", "", "", ""
	switch {
	case l.cp != nil:
		kubectl, kc, cache = l.o.Bins.Kube.Kubectl, l.cp.AdminKubeconfig(), filepath.Join(l.cp.Dir(), "kubectl-cache")
		ns = l.cl.Lab().Topology().ServiceNS()
	case l.state != nil && l.state.Kubectl != "":
		kubectl, kc, cache, ns = l.state.Kubectl, l.state.Kubeconfig, l.state.KubectlCache, l.state.SwitchNS
	default:
		return nil, errors.New("kubelet lab: no control plane")
	}
	argv := append([]string{kubectl, "--kubeconfig=" + kc, "--cache-dir=" + cache}, args...)
	return lab.Command(ctx, ns, argv...), nil
}

// NodeCommand returns the argv prefix that runs a program in node role's
// ("n1") network and mount namespaces, where /run/flannel, /etc/cni/net.d
// and /run/netns are the node's own.
func (l *Lab) NodeCommand(role string) ([]string, error) {
	for _, n := range l.nodes {
		if "n"+strconv.Itoa(n.i) != role {
			continue
		}
		for _, p := range l.Processes() {
			if p.Node == n.i && p.Name == "mountns" && p.Running() {
				return []string{"nsenter", "--net=" + lab.NSPath(n.ns), "--mount=/proc/" + strconv.Itoa(p.PID) + "/ns/mnt", "--"}, nil
			}
		}
		return nil, fmt.Errorf("node %s: its mount namespace's process is gone", role)
	}
	return nil, fmt.Errorf("no node %s in kubelet lab %s", role, l.o.Name)
}

// killRecorded SIGKILLs the processes kubelet.json in dir records that still
// run, kubelets first (so that nothing restarts the pods Purge kills next),
// then containerd, then the rest, and waits until they are gone.
func killRecorded(dir string, timeout time.Duration) error {
	st, err := loadLabState(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	rank := func(p ProcState) int {
		switch p.Name {
		case "kubelet":
			return 0
		case "containerd":
			return 1
		}
		return 2
	}
	procs := slices.Clone(st.Processes)
	slices.SortStableFunc(procs, func(a, b ProcState) int { return rank(a) - rank(b) })
	for r := range 3 {
		var left []ProcState
		for _, p := range procs {
			if rank(p) == r && p.Running() {
				_ = syscall.Kill(p.PID, syscall.SIGKILL)
				left = append(left, p)
			}
		}
		deadline := time.Now().Add(timeout)
		for _, p := range left {
			for p.Running() {
				if time.Now().After(deadline) {
					return fmt.Errorf("%s (pid %d) still running %v after SIGKILL", p.Name, p.PID, timeout)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	return nil
}

// NodeStatus is one node of the lab as the API server sees it.
type NodeStatus struct {
	Role               string // the lab node: "n1"
	Name               string // its Node's name (its underlay IPv4 address)
	IP                 netip.Addr
	Registered, Ready  bool
	NetworkUnavailable string // the condition's status, "" when absent
	PodCIDRs           []string
	// WeftPod is the name of weft's DaemonSet pod on the node ("" when
	// none), WeftPhase its phase ("Running", or "Running, not ready").
	WeftPod, WeftPhase string
	TestPods           []TestPod
}

// TestPod is a pod of the test Deployment.
type TestPod struct {
	Label   string // "n1-p1": its node's role and its index there
	Name    string
	IP      netip.Addr
	Phase   string
	Running bool
}

// Status returns every node of the lab with its Node, weft's pod and the
// test pods on it, in the order of the nodes.
func (l *Lab) Status(ctx context.Context) ([]NodeStatus, error) {
	infos, err := l.nodeInfos(ctx)
	if err != nil {
		return nil, err
	}
	weft, err := l.pods(ctx, WeftNamespace, "app=flannel")
	if err != nil {
		return nil, err
	}
	tests, err := l.TestPods(ctx)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(tests, func(a, b podInfo) int { return strings.Compare(a.name, b.name) })
	var out []NodeStatus
	for _, n := range l.nodes {
		ns := NodeStatus{Role: "n" + strconv.Itoa(n.i), Name: n.name, IP: n.ip}
		if ni := infos[n.name]; ni != nil {
			ns.Registered, ns.Ready, ns.NetworkUnavailable, ns.PodCIDRs = true, ni.ready, ni.networkUnavailable, ni.podCIDRs
		}
		for _, p := range weft {
			if p.node == n.name && (ns.WeftPod == "" || p.running) {
				ns.WeftPod, ns.WeftPhase = p.name, p.phase
				if p.running && !p.ready {
					ns.WeftPhase += ", not ready"
				}
			}
		}
		for _, p := range tests {
			if p.node == n.name {
				ns.TestPods = append(ns.TestPods, TestPod{Label: fmt.Sprintf("%s-p%d", ns.Role, len(ns.TestPods)+1),
					Name: p.name, IP: p.ip, Phase: p.phase, Running: p.running})
			}
		}
		out = append(out, ns)
	}
	return out, nil
}
