//go:build linux

package cli

// `weft lab up --kubelet`: a lab of real nodes (internal/lab/kubelet),
// detached so it outlives the command; status, exec and down find it again
// by its directory's kubelet.json and host.json.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/cluster"
	"github.com/weft-net/weft/internal/lab/kubelet"
)

func upKubelet(ctx context.Context, env Env, f upFlags, set map[string]bool) error {
	switch {
	case set["store"] && f.store != cluster.StoreKube:
		return fmt.Errorf("--kubelet runs weft in kube mode (its manifest): --store must be %s", cluster.StoreKube)
	case f.backend != "vxlan":
		return fmt.Errorf("--kubelet runs the manifest's net-conf.json (vxlan): --backend %q is not supported", f.backend)
	case f.direct || f.far || f.masq:
		return errors.New("--kubelet does not take --directrouting, --far or --ip-masq")
	}
	pods := 1
	if set["pods"] {
		pods = f.pods
	}
	if f.nodes < 1 || f.nodes > lab.MaxNodes || pods < 1 || pods > 10 {
		return fmt.Errorf("--nodes must be 1..%d and --pods 1..10 with --kubelet", lab.MaxNodes)
	}
	if err := lab.ValidateName(f.name); err != nil {
		return err
	}
	if ns, _ := lab.Namespaces(f.name); len(ns) > 0 {
		return fmt.Errorf("lab %s already exists (%d namespaces); run weft lab down --name %s first", f.name, len(ns), f.name)
	}
	repo := f.repo
	if repo == "" {
		repo = filepath.Dir(env.BinDir)
	}
	if _, err := os.Stat(filepath.Join(repo, "hack", "node-bins.sh")); err != nil {
		return fmt.Errorf("--kubelet needs weft's source tree (--repo, default the parent of %s): %w", env.BinDir, err)
	}
	progress := func(s string) { fmt.Fprintf(env.Stdout, "[%s] %s\n", time.Now().Format("15:04:05.000"), s) }
	progress("finding the binaries and images in " + repo + " (hack/*-bins.sh and hack/node-images.sh build each once)")
	bins, err := kubelet.FindBins(ctx, repo)
	if err != nil {
		return fmt.Errorf("--kubelet: %w (make build, make image and make node-bins make them)", err)
	}
	if f.flannel {
		progress("building (once) flannel v0.28.9's image and manifest (hack/flannel-image.sh)")
		if bins.FlannelDir, err = kubelet.FindFlannel(ctx, repo); err != nil {
			return fmt.Errorf("--flannel: %w", err)
		}
	}
	if f.lockWait > 0 {
		if k, _ := kubelet.CurrentLock(); k != nil {
			progress(fmt.Sprintf("waiting up to %v for %s to go down", f.lockWait, k))
		}
	}
	begin := time.Now()
	l, err := kubelet.Up(ctx, kubelet.Options{Name: f.name, Nodes: f.nodes, Replicas: f.nodes * pods, Dir: f.dir(), Bins: bins,
		Logger: env.Logger, LockWait: f.lockWait, Detach: true, EtcdCommand: []string{env.Self, "etcd"},
		Progress: progress, Flannel: f.flannel})
	if errors.Is(err, kubelet.ErrLabRunning) {
		return fmt.Errorf("kubelet lab %s: %w (or give --wait)", f.name, err)
	}
	if err != nil {
		return fmt.Errorf("kubelet lab %s: %w\n(the lab was removed)", f.name, err)
	}
	progress(fmt.Sprintf("lab %s is up in %v; it runs until weft lab down --name %s", f.name, time.Since(begin).Round(time.Millisecond), f.name))
	if err := printKubeletNodes(ctx, env, l); err != nil {
		return err
	}
	if err := printKubeletPings(ctx, env, l); err != nil {
		return err
	}
	printKubectlHint(ctx, env, l)
	if f.flannel {
		if cmd, err := l.KubectlCommand(ctx, "apply", "-f", filepath.Join(f.dir(), kubelet.WeftManifest)); err == nil {
			fmt.Fprintf(env.Stdout, "the lab runs flannel; upgrade it to weft: %s\n", strings.Join(cmd.Args, " "))
		}
	}
	return nil
}

// printKubeletNodes prints the node table of a kubelet lab: each node's IP
// (its Node's name), podCIDR, weft's pod, Ready, and the test pods.
func printKubeletNodes(ctx context.Context, env Env, l *kubelet.Lab) error {
	nodes, err := l.Status(ctx)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "\nNODE\tIP (NODE NAME)\tPODCIDR\tWEFT POD\tREADY\tTEST PODS")
	for _, n := range nodes {
		cidr, weft, ready := strings.Join(n.PodCIDRs, ","), "-", "not registered"
		if cidr == "" {
			cidr = "-"
		}
		if n.WeftPod != "" {
			weft = n.WeftPod + " (" + n.WeftPhase + ")"
		}
		if n.Registered {
			ready = fmt.Sprint(n.Ready)
		}
		var pods []string
		for _, p := range n.TestPods {
			addr := p.IP.String()
			if !p.IP.IsValid() {
				addr = strings.ToLower(p.Phase)
			}
			pods = append(pods, p.Label+"="+addr)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", n.Role, n.IP, cidr, weft, ready, strings.Join(pods, " "))
	}
	return w.Flush()
}

// printKubeletPings prints the ping matrix of the test pods (each ping a
// `kubectl exec <pod> -- ping -c1`) and fails if any pod cannot reach
// another.
func printKubeletPings(ctx context.Context, env Env, l *kubelet.Lab) error {
	nodes, err := l.Status(ctx)
	if err != nil {
		return err
	}
	var pods []kubelet.TestPod
	for _, n := range nodes {
		pods = append(pods, n.TestPods...)
	}
	switch len(pods) {
	case 0:
		return errors.New("no test pod: no ping matrix")
	case 1:
		fmt.Fprintln(env.Stdout, "\none test pod: no ping matrix")
		return nil
	}
	results, err := l.PingAll(ctx)
	if err != nil && len(results) == 0 {
		return err
	}
	w := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(w, "\nping (ms)\t")
	for _, p := range pods {
		fmt.Fprintf(w, "%s\t", p.Label)
	}
	fmt.Fprintln(w)
	failed := 0
	for _, from := range pods {
		fmt.Fprintf(w, "%s\t", from.Label)
		for _, to := range pods {
			c := "?"
			if from.Name == to.Name {
				c = "-"
			}
			for _, r := range results {
				if r.From == from.Name && r.To == to.Name {
					if r.Err != nil {
						failed++
						c = "FAIL"
					} else {
						c = fmt.Sprintf("%.3f", float64(r.RTT.Microseconds())/1000)
					}
				}
			}
			fmt.Fprintf(w, "%s\t", c)
		}
		fmt.Fprintln(w)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if failed > 0 || err != nil {
		return fmt.Errorf("%d of %d pod-to-pod pings failed: %w", failed, len(results), err)
	}
	fmt.Fprintf(env.Stdout, "\nall %d pod-to-pod pings answered (kubectl exec <pod> -- ping)\n", len(results))
	return nil
}

// printKubectlHint says how to reach the lab's API server (it listens in
// the switch namespace only) and a test pod.
func printKubectlHint(ctx context.Context, env Env, l *kubelet.Lab) {
	cmd, err := l.KubectlCommand(ctx, "get", "pods", "-A", "-o", "wide")
	if err != nil {
		return
	}
	fmt.Fprintf(env.Stdout, "\na shell in a test pod: weft lab exec --name %s n1-p1 -- sh\nkubectl as the admin: %s\n",
		l.Name(), strings.Join(cmd.Args, " "))
}

func statusKubelet(ctx context.Context, env Env, c common) error {
	l, err := kubelet.Attach(env.Logger, c.name, c.dir())
	if err != nil {
		return fmt.Errorf("%w (is it up?)", err)
	}
	fmt.Fprintf(env.Stdout, "kubelet lab %s in %s\n", c.name, c.dir())
	if err := printKubeletNodes(ctx, env, l); err != nil {
		return err
	}
	pingErr := printKubeletPings(ctx, env, l)
	w := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "\nPROCESS\tNODE\tPID\tSTATE\tLOG")
	for _, p := range l.Processes() {
		node, state := "-", "running"
		if p.Node > 0 {
			node = fmt.Sprintf("n%d", p.Node)
		}
		if !p.Running() {
			state = "GONE"
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", p.Name, node, p.PID, state, p.Log)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	printKubectlHint(ctx, env, l)
	return pingErr
}

// execKubelet runs a command in a kubelet lab's node (its network and mount
// namespaces) or test pod (kubectl exec); ok is false for any other target
// (sw: the plain namespace exec).
func execKubelet(ctx context.Context, env Env, c common, target string, argv []string) (ok bool, err error) {
	l, err := kubelet.Attach(env.Logger, c.name, c.dir())
	if err != nil {
		return true, err
	}
	var cmd *exec.Cmd
	if prefix, err := l.NodeCommand(target); err == nil {
		full := append(prefix, argv...)
		cmd = exec.CommandContext(ctx, full[0], full[1:]...)
	} else if strings.HasPrefix(target, "n") && !strings.Contains(target, "-") {
		return true, err
	} else {
		nodes, err := l.Status(ctx)
		if err != nil {
			return true, err
		}
		for _, n := range nodes {
			for _, p := range n.TestPods {
				if p.Label == target {
					cmd, err = l.KubectlCommand(ctx, append([]string{"exec", "-i", "-n", kubelet.TestNamespace, p.Name, "--"}, argv...)...)
					if err != nil {
						return true, err
					}
				}
			}
		}
		if cmd == nil {
			return false, nil
		}
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, env.Stdout, env.Stderr
	return true, exitOf(argv[0], cmd.Run())
}
