//go:build linux

package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/weft-net/weft/internal/backend/registry"
	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/bench"
)

type benchFlags struct {
	root, out, backends, peers string
	kubeNodes                  string
	quick, json                bool
	runs, pings, pods, trials  int
	joins, seconds             int
}

// runBench is `weft lab bench`: data plane, control plane and CNI measured on a
// lab of its own (random name, removed at the end), every figure next to a
// baseline from the same run.
func runBench(ctx context.Context, args []string, env Env) error {
	var f benchFlags
	fs := newFlags("bench", env)
	fs.StringVar(&f.root, "state-root", DefaultStateRoot, "directory holding one directory per lab")
	fs.BoolVar(&f.quick, "quick", false, "a sub-minute smoke run (1 short run per figure, 200 peers, 20 pods): checks the bench, not figures to quote")
	fs.BoolVar(&f.json, "json", false, "print the results as JSON on stdout (progress goes to stderr)")
	fs.StringVar(&f.out, "out", "", "write results.json and "+bench.ChartFile+" (throughput ratio per backend) into this directory")
	var variants []string
	for _, v := range bench.Variants(registry.Default()) {
		variants = append(variants, v.String())
	}
	fs.StringVar(&f.backends, "backends", "", "comma-separated backends to measure (default: every backend this build runs, "+
		"each with its variants: "+strings.Join(variants, ",")+")")
	fs.IntVar(&f.runs, "runs", 0, "iperf3 runs per throughput figure (default 5, quick 1)")
	fs.IntVar(&f.seconds, "seconds", 0, "seconds per iperf3 run (default 5, quick 1)")
	fs.IntVar(&f.pings, "pings", 0, "round trips per latency figure (default 30, quick 10)")
	fs.StringVar(&f.peers, "peers", "", "comma-separated simulated cluster sizes (default 1000,5000; quick 200)")
	fs.IntVar(&f.joins, "joins", 0, "joins per cluster size (default 3, quick 1)")
	fs.IntVar(&f.trials, "trials", 0, "lease-to-route measurements per cluster size (default 50, quick 10)")
	fs.IntVar(&f.pods, "pods", 0, "pods added and deleted by the CNI figures (default 100, quick 20)")
	fs.StringVar(&f.kubeNodes, "kube-nodes", "", "comma-separated Node counts for the Kubernetes store, in a real kube-apiserver "+
		"(default 1000,5000; quick 200; 0 skips it, as do missing `make kube-bins` binaries)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o, err := f.options(env)
	if err != nil {
		return err
	}
	res, err := bench.Run(ctx, o)
	if err != nil {
		return err
	}
	return f.report(env, res)
}

func (f benchFlags) options(env Env) (bench.Options, error) {
	o := bench.Options{Quick: f.quick, Runs: f.runs, Pings: f.pings, JoinRuns: f.joins, Trials: f.trials, CNIPods: f.pods,
		Duration: time.Duration(f.seconds) * time.Second, BinDir: env.BinDir, Logger: env.Logger, Progress: env.Stdout, Backends: registry.Default()}
	if f.json {
		o.Progress = env.Stderr
	}
	if f.backends != "" {
		o.Backends = nil
		for _, b := range strings.Split(f.backends, ",") {
			t, ok := registry.Default().Lookup(b)
			if !ok {
				return o, fmt.Errorf("--backends %q: this build runs %v", b, labBackends())
			}
			o.Backends = append(o.Backends, t)
		}
	}
	var err error
	if o.Peers, err = sizes(f.peers); err != nil {
		return o, fmt.Errorf("--peers %q: want sizes 1..60000", f.peers)
	}
	if f.kubeNodes == "0" {
		o.NoKube = true
	} else if o.KubeNodes, err = sizes(f.kubeNodes); err != nil {
		return o, fmt.Errorf("--kube-nodes %q: want sizes 1..60000, or 0 to skip", f.kubeNodes)
	}
	if f.trials > 250 || f.pods > 500 {
		return o, errors.New("--trials must be at most 250 and --pods at most 500")
	}
	for _, bin := range []string{filepath.Join(env.BinDir, "weftd"), filepath.Join(env.BinDir, "cni", "flannel"), filepath.Join(env.BinDir, "cni", "bridge")} {
		if _, err := os.Stat(bin); err != nil {
			return o, fmt.Errorf("%s is missing: run make build (or give the weft binary from ./bin)", bin)
		}
	}
	name, err := lab.RandomName("bn")
	if err != nil {
		return o, err
	}
	o.Name, o.Dir = name, filepath.Join(f.root, name)
	if env.Self != "" {
		o.EtcdCommand = []string{env.Self, "etcd"}
	}
	return o, nil
}

func (f benchFlags) report(env Env, res *bench.Result) error {
	if f.out != "" {
		if err := bench.WriteDir(f.out, res); err != nil {
			return err
		}
	}
	if f.json {
		return bench.WriteJSON(env.Stdout, res)
	}
	fmt.Fprintln(env.Stdout)
	if err := bench.WriteTable(env.Stdout, res); err != nil {
		return err
	}
	if f.out != "" {
		fmt.Fprintf(env.Stdout, "\nwrote %s and %s\n", filepath.Join(f.out, "results.json"), filepath.Join(f.out, bench.ChartFile))
	}
	return nil
}

// sizes parses a comma-separated list of cluster sizes, each 1..60000; an
// empty list is nil.
func sizes(list string) ([]int, error) {
	var out []int
	for p := range strings.SplitSeq(list, ",") {
		if p == "" {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 60000 {
			return nil, fmt.Errorf("size %q is not in 1..60000", p)
		}
		out = append(out, n)
	}
	return out, nil
}
