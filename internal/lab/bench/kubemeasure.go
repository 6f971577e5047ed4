//go:build linux

package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"runtime"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/internal/kubeapi"
)

// What the kube part's baselines are.
const (
	baseKubeList  = "a bare paged list of the same Nodes (client-go REST client, protobuf, 100 per page) plus the direct netlink writes"
	baseNodeRoute = "the Node create's round trip plus a direct netlink route write, seen by the same subscription"
	baseKubeRSS   = "an idle kube-mode weftd on the same node (its own Node only)"
	baseKubeCPU   = "the CPU of a bare paged list of the same Nodes (client-go REST client, protobuf, in the bench process)"
)

// Tuning of the kube part.
const (
	// kubeWorkers is how many Node creates are in flight.
	kubeWorkers = 24
	// kubeSettle is how long after its join weftd's RSS is read: it
	// returns its start-up garbage to the OS once up (flannel's "settled"
	// figure is read the same way).
	kubeSettle = 2 * time.Second
)

// KubePlane holds the Kubernetes store's figures for one cluster size.
type KubePlane struct {
	Nodes int `json:"nodes"`
	// NodeJSONBytes and NodeProtoBytes are one simulated Node's size as the
	// apiserver returns it.
	NodeJSONBytes  int `json:"node_json_bytes"`
	NodeProtoBytes int `json:"node_protobuf_bytes"`
	// CreatesPerSec is the rate the Nodes were created at (parallel).
	CreatesPerSec float64 `json:"creates_per_sec"`
	// Join: weftd exec to every route in the kernel, seconds, against the
	// direct netlink writes and against a bare list plus those writes.
	Join         Figure `json:"join"`
	JoinVsList   Figure `json:"join_vs_list"`
	NodeRouteP50 Figure `json:"node_to_route_p50"`
	NodeRouteP95 Figure `json:"node_to_route_p95"`
	// RSS (VmRSS, read kubeSettle after the join) and PeakRSS (VmHWM) in
	// MiB against an idle kube-mode weftd's.
	RSS     Figure `json:"rss"`
	PeakRSS Figure `json:"peak_rss"`
	// CPU seconds weftd used to join against a bare list's.
	CPU Figure `json:"cpu"`
	// ListSeconds and ListAllocMiB are the bare list's wall time and the
	// bytes it allocated (Go heap, TotalAlloc).
	ListSeconds  Stat `json:"list_seconds"`
	ListAllocMiB Stat `json:"list_alloc_mib"`
}

// Figures lists the size's figures in table order.
func (k KubePlane) Figures() []Figure {
	return []Figure{k.Join, k.JoinVsList, k.NodeRouteP50, k.NodeRouteP95, k.RSS, k.PeakRSS, k.CPU}
}

// kubeRun is one measured kube join with its baselines.
type kubeRun struct {
	joinRun         // weftd, direct, weftdCPU, directCPU, rss
	hwm     int64   // VmHWM, bytes
	list    listRun // the bare list
}

// listRun is one bare list.
type listRun struct {
	wall, cpu time.Duration
	alloc     uint64
}

// kube measures the Kubernetes store for each of Options.KubeNodes; skipped
// says why it did not (no binaries, --kube-nodes 0).
func (b *bench) kube(ctx context.Context) (_ []KubePlane, skipped string, retErr error) {
	if b.o.NoKube {
		return nil, "skipped (--kube-nodes 0)", nil
	}
	bins, err := kubeapi.Binaries(b.o.KubeBinDir)
	if err != nil {
		b.prog.Step(0, "kube control plane: skipped: %v", err)
		return nil, "skipped: " + err.Error(), nil
	}
	if err := b.stopJoinNode(ctx); err != nil { // its etcd-mode weftd
		return nil, "", err
	}
	b.prog.Step(8*time.Second, "kube control plane: kube-apiserver and kube-controller-manager in %s", b.c.Lab().Topology().ServiceNS())
	k, err := b.startKube(ctx, bins)
	if err != nil {
		return nil, "", err
	}
	defer func() { retErr = errors.Join(retErr, k.close()) }()
	b.prog.Step(3*time.Second, "kube control plane: an idle kube-mode weftd on n%d (its RSS is the baseline)", joinNode)
	idle, err := b.kubeJoin(ctx, k, 0)
	if err != nil {
		return nil, "", err
	}
	sizes := slices.Sorted(slices.Values(b.o.KubeNodes))
	maxN := sizes[len(sizes)-1]
	all, err := simPeers(maxN+len(sizes)*b.o.Trials, map[netip.Prefix]bool{netip.MustParsePrefix(kubeOwnCIDR): true})
	if err != nil {
		return nil, "", err
	}
	var out []KubePlane
	for i, n := range sizes {
		trials := all[maxN+i*b.o.Trials : maxN+(i+1)*b.o.Trials]
		kp, err := b.kubeSize(ctx, k, all[:n], trials, idle)
		if err != nil {
			return nil, "", fmt.Errorf("%d nodes: %w", n, err)
		}
		out = append(out, kp)
	}
	return out, "", nil
}

// kubeSize measures one cluster size: sims are its peers (the first
// k.created of them exist already), trials the Nodes created one by one.
func (b *bench) kubeSize(ctx context.Context, k *kubeEnv, sims, trials []peer, idle kubeRun) (KubePlane, error) {
	n := len(sims)
	if err := b.stopKubeWeftd(ctx, k); err != nil {
		return KubePlane{}, err
	}
	b.prog.Step(time.Duration(n-k.created)*2*time.Millisecond, "kube control plane: creating %d Nodes (%d in flight)", n-k.created, kubeWorkers)
	t0 := time.Now()
	if err := k.api.createAll(ctx, sims[k.created:], kubeWorkers); err != nil {
		return KubePlane{}, err
	}
	kp := KubePlane{Nodes: n, CreatesPerSec: float64(n-k.created) / time.Since(t0).Seconds()}
	k.created = n
	var err error
	if kp.NodeJSONBytes, kp.NodeProtoBytes, err = k.api.size(ctx, kubeNodeName(sims[0])); err != nil {
		return KubePlane{}, err
	}
	var runs []kubeRun
	for j := range b.o.JoinRuns {
		b.prog.Step(kubeSettle+2*time.Second+time.Duration(n)*time.Millisecond,
			"kube control plane: %d Nodes, join %d/%d: bare list, direct netlink, then weftd on n%d", n, j+1, b.o.JoinRuns, joinNode)
		r, err := b.kubeJoinRun(ctx, k, sims)
		if err != nil {
			return KubePlane{}, err
		}
		runs = append(runs, r)
	}
	b.prog.Step(time.Duration(len(trials))*100*time.Millisecond, "kube control plane: %d Nodes, new Node to route, %d Nodes", n, len(trials))
	bodies := map[netip.Prefix][]byte{}
	for _, p := range trials {
		bodies[p.subnet] = simNode(p)
	}
	lat, base, err := b.publishToRoute(ctx, trials, func(ctx context.Context, p peer) error { return k.api.create(ctx, bodies[p.subnet]) })
	if err != nil {
		return KubePlane{}, err
	}
	if err := k.api.deleteAll(ctx, trials); err != nil {
		return KubePlane{}, err
	}
	kubeFigures(&kp, runs, idle, lat, base)
	return kp, nil
}

// kubeJoinRun is one join of weftd to sims with its baselines, each from a
// clean kernel: the bare list, the direct netlink writes, then weftd.
func (b *bench) kubeJoinRun(ctx context.Context, k *kubeEnv, sims []peer) (kubeRun, error) {
	if err := b.stopKubeWeftd(ctx, k); err != nil {
		return kubeRun{}, err
	}
	l, err := kubeList(ctx, k.api, len(sims)+1)
	if err != nil {
		return kubeRun{}, err
	}
	d, err := b.direct(ctx, sims)
	if err != nil {
		return kubeRun{}, err
	}
	r, err := b.kubeJoin(ctx, k, len(sims))
	if err != nil {
		return kubeRun{}, err
	}
	r.direct, r.directCPU, r.list = d.direct, d.directCPU, l
	return r, nil
}

// kubeJoin starts the kube-mode weftd from a clean state and waits until it
// is ready and want routes are in the joining node's kernel; then, after
// kubeSettle, reads its memory.
func (b *bench) kubeJoin(ctx context.Context, k *kubeEnv, want int) (kubeRun, error) {
	if err := b.stopKubeWeftd(ctx, k); err != nil {
		return kubeRun{}, err
	}
	h, closeNL, err := b.netlinkAt(b.c.NodeNS(joinNode))
	if err != nil {
		return kubeRun{}, err
	}
	defer closeNL()
	if err := b.startKubeWeftd(ctx, k); err != nil { // cleans the kernel state first: not timed
		return kubeRun{}, err
	}
	start := k.weftd.execAt
	if err := b.waitKubeReady(ctx, k.weftd); err != nil {
		return kubeRun{}, err
	}
	for {
		rs, err := h.ListRoutes(clusterNetwork())
		if err != nil {
			return kubeRun{}, err
		}
		if len(rs) >= want {
			break
		}
		if time.Since(start) > 2*time.Minute {
			return kubeRun{}, fmt.Errorf("%d of %d routes after %v; see %s", len(rs), want, time.Since(start), k.weftd.log)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var r kubeRun
	r.weftd = time.Since(start)
	pid := k.weftd.pid()
	if r.weftdCPU, err = b.proc.ProcessCPU(pid); err != nil {
		return kubeRun{}, err
	}
	select {
	case <-time.After(kubeSettle):
	case <-ctx.Done():
		return kubeRun{}, ctx.Err()
	}
	if r.rss, r.hwm, err = b.proc.Memory(pid); err != nil {
		return kubeRun{}, err
	}
	return r, nil
}

// kubeList lists every Node as weftd's store does, in this process, and
// measures its wall time, this process's CPU and the bytes it allocated.
func kubeList(ctx context.Context, api *kubeClient, want int) (listRun, error) {
	runtime.GC()
	var m0, m1 runtime.MemStats
	var u0, u1 unix.Rusage
	runtime.ReadMemStats(&m0)
	_ = unix.Getrusage(unix.RUSAGE_SELF, &u0)
	start := time.Now()
	n, err := api.list(ctx)
	wall := time.Since(start)
	_ = unix.Getrusage(unix.RUSAGE_SELF, &u1)
	runtime.ReadMemStats(&m1)
	if err != nil {
		return listRun{}, err
	}
	if n < want {
		return listRun{}, fmt.Errorf("bare list: %d Nodes, want %d", n, want)
	}
	return listRun{wall: wall, cpu: rusageCPU(u1) - rusageCPU(u0), alloc: m1.TotalAlloc - m0.TotalAlloc}, nil
}

// kubeFigures fills kp's figures from the joins, the idle weftd and the
// latency samples.
func kubeFigures(kp *KubePlane, runs []kubeRun, idle kubeRun, lat, base []time.Duration) {
	mib := func(v int64) float64 { return float64(v) / (1 << 20) }
	var weftd, direct, floor, wcpu, lcpu, rss, hwm, lwall, lalloc []float64
	for _, r := range runs {
		weftd, direct = append(weftd, r.weftd.Seconds()), append(direct, r.direct.Seconds())
		floor = append(floor, (r.list.wall + r.direct).Seconds())
		wcpu, lcpu = append(wcpu, r.weftdCPU.Seconds()), append(lcpu, r.list.cpu.Seconds())
		rss, hwm = append(rss, mib(r.rss)), append(hwm, mib(r.hwm))
		lwall, lalloc = append(lwall, r.list.wall.Seconds()), append(lalloc, float64(r.list.alloc)/(1<<20))
	}
	kp.Join = NewFigure("join: every route in the kernel", "s", "lower", baseJoin, Summarise(weftd), Summarise(direct))
	kp.JoinVsList = NewFigure("join (vs bare list + netlink)", "s", "lower", baseKubeList, Summarise(weftd), Summarise(floor))
	kp.NodeRouteP50 = NewFigure("new Node to route p50", "ms", "lower", baseNodeRoute, Percentile(ms(lat), 50), Percentile(ms(base), 50))
	kp.NodeRouteP95 = NewFigure("new Node to route p95", "ms", "lower", baseNodeRoute, Percentile(ms(lat), 95), Percentile(ms(base), 95))
	kp.RSS = NewFigure("weftd RSS settled (vs idle weftd)", "MiB", "lower", baseKubeRSS, Summarise(rss), Summarise([]float64{mib(idle.rss)}))
	kp.PeakRSS = NewFigure("weftd peak RSS, VmHWM (vs idle)", "MiB", "lower", baseKubeRSS, Summarise(hwm), Summarise([]float64{mib(idle.hwm)}))
	kp.CPU = NewFigure("CPU to join (vs bare list)", "CPU s", "lower", baseKubeCPU, Summarise(wcpu), Summarise(lcpu))
	kp.ListSeconds, kp.ListAllocMiB = Summarise(lwall), Summarise(lalloc)
}

// writeKubeNotes prints the kube part's baselines and, per size, the Nodes'
// size and the bare list's cost, or why the part was skipped.
func writeKubeNotes(w io.Writer, r *Result) {
	if r.KubeSkipped != "" {
		fmt.Fprintf(w, "kube control plane: %s\n", r.KubeSkipped)
		return
	}
	if len(r.Kube) == 0 {
		return
	}
	fmt.Fprintf(w, "kube baselines: join vs list = %s; new Node to route = %s; RSS = %s; CPU = %s\n",
		baseKubeList, baseNodeRoute, baseKubeRSS, baseKubeCPU)
	for _, k := range r.Kube {
		fmt.Fprintf(w, "kube %d nodes: one Node is %d bytes of JSON, %d of protobuf; created at %.0f/s; the bare list took %s s and allocated %s MiB\n",
			k.Nodes, k.NodeJSONBytes, k.NodeProtoBytes, k.CreatesPerSec, fmtStat(k.ListSeconds), fmtStat(k.ListAllocMiB))
	}
}
