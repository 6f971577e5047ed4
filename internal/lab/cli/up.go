//go:build linux

package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/weft-net/weft/internal/backend/registry"
	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/kubeapi"
	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/cluster"
)

type upFlags struct {
	common
	nodes, pods int
	backend     string
	store       string
	direct      bool
	far, masq   bool
	// --kubelet: real nodes (kubelet.go).
	kubelet  bool
	flannel  bool
	repo     string
	lockWait time.Duration
}

func up(ctx context.Context, args []string, env Env) error {
	var f upFlags
	fs := newFlags("up", env)
	f.add(fs)
	fs.IntVar(&f.nodes, "nodes", 3, "number of nodes")
	fs.IntVar(&f.pods, "pods", 2, "pods per node")
	fs.StringVar(&f.backend, "backend", config.DefaultBackend, "backend: "+fmt.Sprint(labBackends()))
	fs.StringVar(&f.store, "store", cluster.StoreEtcd, "lease store: etcd, or kube (a real kube-apiserver and kube-controller-manager "+
		"on the switch, the Node annotations of weftd --kube-subnet-mgr; needs make kube-bins)")
	fs.BoolVar(&f.direct, "directrouting", false, "DirectRouting, for the backends that have it (vxlan, ipip; needs --far to show both paths)")
	fs.BoolVar(&f.far, "far", false, "put the last node on a second underlay subnet behind a router")
	fs.BoolVar(&f.masq, "ip-masq", false, "run weftd with --ip-masq and add an outside-world namespace behind the router")
	fs.BoolVar(&f.kubelet, "kubelet", false, "real nodes: containerd and kubelet per node, weft deployed by kubectl apply of "+
		"deploy/kube-weft.yml from its image, a Deployment of test pods (implies --store kube; --pods is per node, default 1; "+
		"one such lab at a time; needs the source tree: see --repo)")
	fs.BoolVar(&f.flannel, "flannel", false, "with --kubelet: deploy flannel v0.28.9 by its own kube-flannel.yml instead of weft "+
		"(hack/flannel-image.sh builds it once, about 3 minutes), to try the upgrade: kubectl apply -f <lab dir>/kube-weft.yml")
	fs.StringVar(&f.repo, "repo", "", "with --kubelet: weft's source tree, whose hack/ scripts build (once) and find kubelet, containerd, "+
		"the node images and the Kubernetes binaries, and whose bin/ holds make build's CNI plugins and make image's "+
		"weft-image.oci.tar (default: the parent of the weft binary's directory)")
	fs.DurationVar(&f.lockWait, "wait", 0, "with --kubelet: how long to wait for another kubelet lab to go down (0: fail at once)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if f.flannel && !f.kubelet {
		return errors.New("--flannel needs --kubelet")
	}
	if f.kubelet {
		set := map[string]bool{}
		fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
		return upKubelet(ctx, env, f, set)
	}
	if f.store != cluster.StoreEtcd && f.store != cluster.StoreKube {
		return fmt.Errorf("--store %q: want %s or %s", f.store, cluster.StoreEtcd, cluster.StoreKube)
	}
	if !slices.Contains(labBackends(), f.backend) {
		return fmt.Errorf("--backend %q: this build runs %v", f.backend, labBackends())
	}
	if f.nodes < 1 || f.nodes > lab.MaxNodes || f.pods < 0 || f.pods > 50 {
		return fmt.Errorf("--nodes must be 1..%d and --pods 0..50", lab.MaxNodes)
	}
	if err := lab.ValidateName(f.name); err != nil {
		return err
	}
	if err := preflight(exec.LookPath); err != nil {
		return err
	}
	if ns, _ := lab.Namespaces(f.name); len(ns) > 0 {
		return fmt.Errorf("lab %s already exists (%d namespaces); run weft lab down --name %s first", f.name, len(ns), f.name)
	}
	c, err := startCluster(ctx, env, f)
	if err != nil {
		return err
	}
	if err := printNodes(ctx, env, c); err != nil {
		return err
	}
	return printPings(ctx, env, c)
}

// labBackends are the backend types of this build (the registry's list).
func labBackends() []string { return registry.Default().Names() }

func startCluster(ctx context.Context, env Env, f upFlags) (*cluster.Cluster, error) {
	o := cluster.Options{
		Lab:           lab.Options{Name: f.name, Nodes: f.nodes, Outside: f.masq, StateDir: f.dir()},
		Backend:       f.backend,
		Store:         f.store,
		Pods:          f.pods,
		BinDir:        env.BinDir,
		Dir:           f.dir(),
		EtcdCommand:   []string{env.Self, "etcd"},
		Detach:        true,
		Logger:        env.Logger,
		DirectRouting: f.direct,
	}
	if f.far {
		o.Lab.Far = []int{f.nodes}
	}
	if f.masq {
		o.WeftdArgs = append(o.WeftdArgs, "--ip-masq")
	}
	for _, bin := range []string{filepath.Join(env.BinDir, "weftd"), filepath.Join(env.BinDir, "cni", "flannel")} {
		if _, err := os.Stat(bin); err != nil {
			return nil, fmt.Errorf("%s is missing: run make build (or give the weft binary from ./bin)", bin)
		}
	}
	if f.store == cluster.StoreKube {
		bins, err := kubeapi.Binaries("")
		if err != nil {
			return nil, fmt.Errorf("--store kube: %w", err)
		}
		o.KubeBins = bins
	}
	step := 0
	o.Progress = func(s string) {
		step++
		fmt.Fprintf(env.Stdout, "[%s] %s\n", time.Now().Format("15:04:05.000"), s)
	}
	c, err := cluster.Up(ctx, o)
	if err != nil {
		kept := "no log was written"
		if logs := keptLogs(f.dir()); len(logs) > 0 {
			kept = strings.Join(logs, ", ") + " are kept in " + f.dir()
		}
		return nil, fmt.Errorf("lab %s failed at step %d: %w\n(the lab was removed; %s)", f.name, step, err, kept)
	}
	return c, nil
}

// keptLogs names, relative to dir, the logs a failed lab left there.
func keptLogs(dir string) []string {
	var logs []string
	for _, pattern := range []string{"etcd.log", "kube/*.log", "n*/weftd.log", "n*/cni.log"} {
		m, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, p := range m {
			if rel, err := filepath.Rel(dir, p); err == nil {
				logs = append(logs, rel)
			}
		}
	}
	return logs
}

// preflight fails, before anything is built, when a program the lab needs
// is missing (the lab's namespaces, weftd's forward and masquerade rules),
// naming the apt-get line that installs it (make lab runs hack/deps.sh lab,
// which does).
func preflight(lookPath func(string) (string, error)) error {
	tools := [][2]string{{"ip", "iproute2"}, {"iptables", "iptables"}, {"ip6tables", "iptables"}}
	var missing, pkgs []string
	for _, t := range tools {
		if _, err := lookPath(t[0]); err != nil {
			missing = append(missing, t[0])
			if !slices.Contains(pkgs, t[1]) {
				pkgs = append(pkgs, t[1])
			}
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("the lab needs %s, not found in PATH: run make lab (hack/deps.sh lab installs them) or "+
		"apt-get install -y --no-install-recommends %s", strings.Join(missing, ", "), strings.Join(pkgs, " "))
}
