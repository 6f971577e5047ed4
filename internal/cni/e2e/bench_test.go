//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/weft-net/weft/internal/cni"
)

// benchPods is how many pods each side of the benchmark adds and deletes.
const benchPods = 100

// BenchmarkAddDelLatency measures ADD and DEL latency of weft's plugin
// (flannel conf -> bridge -> host-local) against calling bridge directly with
// the delegate configuration weft builds, in the same run: two identical
// nodes, the calls interleaved pod by pod so that both see the same machine
// load. Each plugin is exec'd the way libcni does. Run it with
//
//	go test -run '^$' -bench AddDelLatency -benchtime 1x ./internal/cni/e2e/
//
// and read the p50/p99 metrics (milliseconds) and the logged table.
func BenchmarkAddDelLatency(b *testing.B) {
	env := env4()
	weft, bridge := newNode(b, &env, ""), newNode(b, &env, "")
	weftConf := weft.list.Plugins[0].Bytes
	weftConf, err := injectJSON(weftConf, map[string]any{"name": "cbr0", "cniVersion": "1.1.0"})
	if err != nil {
		b.Fatal(err)
	}
	bridgeConf, err := delegateConf(bridge)
	if err != nil {
		b.Fatal(err)
	}
	lat := map[string][]time.Duration{}
	for b.Loop() {
		for op, ds := range runLatencyRound(b, weft, bridge, weftConf, bridgeConf) {
			lat[op] = append(lat[op], ds...)
		}
	}
	for _, op := range []string{"ADD", "DEL"} {
		w, br := lat["weft "+op], lat["bridge "+op]
		b.ReportMetric(ms(pct(w, 50)), "weft-"+op+"-p50-ms")
		b.ReportMetric(ms(pct(w, 99)), "weft-"+op+"-p99-ms")
		b.ReportMetric(ms(pct(br, 50)), "bridge-"+op+"-p50-ms")
		b.ReportMetric(ms(pct(br, 99)), "bridge-"+op+"-p99-ms")
		b.Logf("%s over %d pods: weft p50 %.2f ms p99 %.2f ms; bridge direct p50 %.2f ms p99 %.2f ms; ratio p50 %.2f p99 %.2f",
			op, len(w), ms(pct(w, 50)), ms(pct(w, 99)), ms(pct(br, 50)), ms(pct(br, 99)),
			ms(pct(w, 50))/ms(pct(br, 50)), ms(pct(w, 99))/ms(pct(br, 99)))
	}
}

// runLatencyRound adds benchPods pods on each node, then deletes them,
// alternating weft and bridge, and returns the latencies by "who OP".
func runLatencyRound(b *testing.B, weft, bridge *node, weftConf, bridgeConf []byte) map[string][]time.Duration {
	ctx := context.Background()
	out := map[string][]time.Duration{}
	pods := make([][2]ns.NetNS, benchPods)
	b.StopTimer()
	for i := range pods {
		pods[i] = [2]ns.NetNS{weft.pod(b), bridge.pod(b)}
	}
	b.StartTimer()
	for _, cmd := range []string{"ADD", "DEL"} {
		for i := range pods {
			id := fmt.Sprintf("bench-%d", i)
			d, err := weft.execPlugin(ctx, "flannel", cmd, id, pods[i][0], weftConf)
			if err != nil {
				b.Fatalf("weft %s %s: %v", cmd, id, err)
			}
			out["weft "+cmd] = append(out["weft "+cmd], d)
			d, err = bridge.execPlugin(ctx, "bridge", cmd, id, pods[i][1], bridgeConf)
			if err != nil {
				b.Fatalf("bridge %s %s: %v", cmd, id, err)
			}
			out["bridge "+cmd] = append(out["bridge "+cmd], d)
		}
	}
	b.StopTimer()
	for _, p := range pods {
		closeNS(p[0])
		closeNS(p[1])
	}
	b.StartTimer()
	return out
}

// delegateConf is the configuration weft would hand bridge on node n.
func delegateConf(n *node) ([]byte, error) {
	conf, err := injectJSON(n.list.Plugins[0].Bytes, map[string]any{"name": "cbr0", "cniVersion": "1.1.0"})
	if err != nil {
		return nil, err
	}
	nc, err := cni.ParseNetConf(conf)
	if err != nil {
		return nil, err
	}
	env := env4()
	return json.Marshal(cni.BuildDelegate(nc, env))
}

// execPlugin runs one plugin command in the node's namespace and times it.
func (n *node) execPlugin(ctx context.Context, plugin, cmd, id string, pod ns.NetNS, conf []byte) (time.Duration, error) {
	var d time.Duration
	err := n.do(func() error {
		args := &invoke.Args{Command: cmd, ContainerID: id, NetNS: pod.Path(), IfName: "eth0", Path: n.bin}
		path := filepath.Join(n.bin, plugin)
		start := time.Now()
		var err error
		if cmd == "ADD" {
			_, err = invoke.ExecPluginWithResult(ctx, path, conf, args, nil)
		} else {
			err = invoke.ExecPluginWithoutResult(ctx, path, conf, args, nil)
		}
		d = time.Since(start)
		return err
	})
	return d, err
}

func injectJSON(conf []byte, kv map[string]any) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(conf, &m); err != nil {
		return nil, err
	}
	for k, v := range kv {
		m[k] = v
	}
	return json.Marshal(m)
}

// pct is the p-th percentile (nearest rank) of ds.
func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := (p*len(s) + 99) / 100 // ceil(p/100 * n)
	return s[max(rank-1, 0)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
