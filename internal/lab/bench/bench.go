//go:build linux

// Package bench is `weft lab bench`: the data plane, the control plane and
// the CNI plugin measured in one invocation on one lab, every figure next to a
// baseline taken in the same run on the same machine.
//
// # Design notes
//
//   - One lab of three nodes (n1, n2 on the near underlay subnet; n3 the
//     joining node) with one pod on n1 and one on n2. The data plane switches
//     backend in place: every weftd stops, the backend's devices and weft's
//     routes are removed, net-conf.json changes in etcd, every weftd starts
//     again and takes its old lease back, so the pods keep their addresses.
//   - Data plane, per backend: iperf3 TCP between the two pods (1 and 4
//     streams) interleaved run by run with the same test between the two
//     nodes' underlay addresses (the baseline), so that both see the same
//     machine load; ICMP round trips pod to pod and node to node; the
//     machine's busy CPU (/proc/stat; namespaces share the kernel) per GB
//     moved. Figures are medians over the runs with their min-max.
//   - Control plane: N simulated vxlan peers are written straight into etcd
//     under one etcd lease; n3's weftd then starts from a clean kernel state
//     and the clock stops when /readyz answers and every peer's route is in
//     n3's kernel. The baseline writes the same FDB entries, neighbours and
//     routes directly with batched netlink in n3's namespace. Lease-to-route
//     latency puts one more lease and waits for the route on a netlink
//     subscription; its baseline is the etcd put's round trip plus a direct
//     netlink route write seen by the same subscription.
//   - CNI: ADD then DEL of many pods through the real plugin chain
//     (flannel -> bridge -> host-local) on n1, interleaved pod by pod with
//     bridge called directly on n2 with the delegate configuration weft would
//     build.
//   - The lab has a random name and is removed when the bench ends, whether
//     it succeeded or not; the working directory (logs) is kept on failure.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/cluster"
)

// Options describe a bench run. Zero fields take the defaults of the full
// run, or of the quick run when Quick is set.
type Options struct {
	// Name is the lab's name (lab.RandomName); Dir its working directory.
	Name, Dir string
	// Backends are the backend types measured, each also with its
	// BenchVariants (lab.Backends; vxlan and ipip: DirectRouting).
	Backends backend.Registry
	// Quick is the sub-minute smoke run.
	Quick bool
	// Runs per throughput figure, Duration of each iperf3 run, Pings per
	// latency figure.
	Runs     int
	Duration time.Duration
	Pings    int
	// Peers are the simulated cluster sizes; JoinRuns joins per size;
	// Trials lease-to-route measurements per size.
	Peers    []int
	JoinRuns int
	Trials   int
	// CNIPods is the number of pods added and deleted.
	CNIPods int
	// KubeNodes are the Kubernetes store's cluster sizes (Nodes in a real
	// kube-apiserver); NoKube skips that part, as do missing binaries
	// (KubeBinDir, "" meaning kubeapi.Binaries' default).
	KubeNodes  []int
	NoKube     bool
	KubeBinDir string
	// BinDir holds weftd and cni/; EtcdCommand runs the lab's etcd as a
	// process (nil: embedded in this process).
	BinDir      string
	EtcdCommand []string
	// Progress receives one line per step.
	Progress io.Writer
	Logger   *slog.Logger
	Now      func() time.Time
}

func (o *Options) defaults() {
	full := Options{Runs: 5, Duration: 5 * time.Second, Pings: 30, Peers: []int{1000, 5000}, JoinRuns: 3, Trials: 50, CNIPods: 100,
		KubeNodes: []int{1000, 5000}}
	if o.Quick {
		full = Options{Runs: 1, Duration: time.Second, Pings: 10, Peers: []int{200}, JoinRuns: 1, Trials: 10, CNIPods: 20,
			KubeNodes: []int{200}}
	}
	o.Runs = orDefault(o.Runs, full.Runs)
	o.Duration = orDefault(o.Duration, full.Duration)
	o.Pings = orDefault(o.Pings, full.Pings)
	o.JoinRuns = orDefault(o.JoinRuns, full.JoinRuns)
	o.Trials = orDefault(o.Trials, full.Trials)
	o.CNIPods = orDefault(o.CNIPods, full.CNIPods)
	if len(o.Peers) == 0 {
		o.Peers = full.Peers
	}
	if len(o.KubeNodes) == 0 {
		o.KubeNodes = full.KubeNodes
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

func orDefault[T int | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// Variant is one backend configuration measured: a type and the options
// added to its Backend section (lab.Backend.BenchVariants).
type Variant struct {
	Type    string `json:"type"`
	Options string `json:"options,omitempty"`
}

// String names the variant: the type, then "+Option" for each option set
// to true and "+Option=value" for others ("vxlan+DirectRouting").
func (v Variant) String() string {
	if v.Options == "" {
		return v.Type
	}
	var opts map[string]json.RawMessage
	if err := json.Unmarshal([]byte("{"+v.Options+"}"), &opts); err != nil {
		return v.Type + "+" + v.Options
	}
	s := v.Type
	for _, k := range slices.Sorted(maps.Keys(opts)) {
		if string(opts[k]) == "true" {
			s += "+" + k
		} else {
			s += "+" + k + "=" + strings.Trim(string(opts[k]), `"`)
		}
	}
	return s
}

// NetConf is the variant's net-conf.json: 10.0.0.0/8 in /24s, room for the
// control plane's thousands of simulated peers.
func (v Variant) NetConf() string {
	opts := ""
	if v.Options != "" {
		opts = "," + v.Options
	}
	return `{"Network":"10.0.0.0/8","Backend":{"Type":"` + v.Type + `"` + opts + `}}`
}

// Variants lists what the bench measures for the types: each with its
// defaults, then with each of its BenchVariants.
func Variants(types backend.Registry) []Variant {
	var out []Variant
	for _, t := range types {
		out = append(out, Variant{Type: t.Name})
		for _, o := range lab.Backends()[t.Name].BenchVariants {
			out = append(out, Variant{Type: t.Name, Options: o})
		}
	}
	return out
}

// bench is one run in progress.
type bench struct {
	o        Options
	log      *slog.Logger
	c        *cluster.Cluster
	prog     *progress
	proc     Proc
	variants []Variant
	current  Variant // the backend weftd runs with
}

// Run builds the lab, measures everything and removes the lab.
func Run(ctx context.Context, o Options) (_ *Result, retErr error) {
	o.defaults()
	if len(o.Backends) == 0 {
		return nil, errors.New("bench: no backend to measure")
	}
	b := &bench{o: o, log: o.Logger.With("component", "labbench"), proc: Proc{Root: "/proc"}, variants: Variants(o.Backends)}
	steps, planned := b.plan()
	b.prog = newProgress(o.Progress, o.Now, steps, planned)
	res := &Result{Date: o.Now().UTC(), Quick: o.Quick, Settings: settingsOf(o), Machine: ReadMachine(b.proc)}
	if err := b.up(ctx); err != nil {
		return nil, err
	}
	defer func() {
		if err := b.c.Down(context.WithoutCancel(ctx)); err != nil {
			retErr = errors.Join(retErr, fmt.Errorf("remove lab %s: %w", o.Name, err))
		}
		if retErr == nil {
			_ = os.RemoveAll(o.Dir)
		}
	}()
	for _, v := range b.variants {
		dp, err := b.dataPlane(ctx, v)
		if err != nil {
			return nil, fmt.Errorf("data plane %s: %w (logs in %s)", v, err, o.Dir)
		}
		res.DataPlane = append(res.DataPlane, dp)
	}
	cp, err := b.controlPlane(ctx)
	if err != nil {
		return nil, fmt.Errorf("control plane: %w (logs in %s)", err, o.Dir)
	}
	res.ControlPlane = cp
	if res.CNI, err = b.cni(ctx); err != nil {
		return nil, fmt.Errorf("cni: %w (logs in %s)", err, o.Dir)
	}
	if res.Kube, res.KubeSkipped, err = b.kube(ctx); err != nil {
		return nil, fmt.Errorf("kube control plane: %w (logs in %s)", err, o.Dir)
	}
	res.Machine.LoadEnd = readLoad(b.proc)
	res.Elapsed = o.Now().Sub(res.Date).Round(time.Second).String()
	return res, nil
}

// plan counts the steps and estimates their total duration.
func (b *bench) plan() (int, time.Duration) {
	o := b.o
	steps, d := 1, 3*time.Second // the lab
	perVariant := 1 + 4*o.Runs + 1
	steps += len(b.variants) * perVariant
	d += time.Duration(len(b.variants)) * (2*time.Second + time.Duration(4*o.Runs)*(o.Duration+time.Second) +
		time.Duration(2*o.Pings)*20*time.Millisecond)
	steps += 2 // back to vxlan, the idle weftd
	d += 3 * time.Second
	for _, n := range o.Peers {
		steps += 1 + o.JoinRuns + 1
		d += time.Duration(n)*time.Millisecond + time.Duration(o.JoinRuns)*(2*time.Second+time.Duration(n)*400*time.Microsecond) +
			time.Duration(o.Trials)*60*time.Millisecond
	}
	steps++
	d += time.Duration(o.CNIPods) * 200 * time.Millisecond
	if !o.NoKube {
		steps += 2 // the control plane, the idle weftd
		d += 11 * time.Second
		for _, n := range o.KubeNodes {
			steps += 1 + o.JoinRuns + 1
			d += time.Duration(n)*2*time.Millisecond + time.Duration(o.JoinRuns)*(kubeSettle+2*time.Second+time.Duration(n)*time.Millisecond) +
				time.Duration(o.Trials)*100*time.Millisecond
		}
	}
	return steps, d
}

// up builds the lab, running the first variant.
func (b *bench) up(ctx context.Context) error {
	b.prog.Step(10*time.Second, "building lab %s: 3 nodes, etcd, weftd (%s)", b.o.Name, b.variants[0])
	o := cluster.Options{
		Lab:         lab.Options{Name: b.o.Name, Nodes: 3, StateDir: b.o.Dir},
		Backend:     b.variants[0].Type,
		NetConf:     b.variants[0].NetConf(),
		BinDir:      b.o.BinDir,
		Dir:         b.o.Dir,
		EtcdCommand: b.o.EtcdCommand,
		Logger:      b.o.Logger,
	}
	c, err := cluster.Up(ctx, o)
	if err != nil {
		return fmt.Errorf("build lab %s: %w (logs in %s)", b.o.Name, err, b.o.Dir)
	}
	b.c, b.current = c, b.variants[0]
	return nil
}
