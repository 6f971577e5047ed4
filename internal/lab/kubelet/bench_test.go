//go:build linux

package kubelet

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/lab"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// EnvBench selects TestKubeletBench (make bench-kubelet).
const EnvBench = "WEFT_BENCH_KUBELET"

// benchPods is how many pods are created, one at a time, per lab.
const benchPods = 20

// TestKubeletBench is the real-node benchmark (issue 17): a lab with weft
// and one with the bridge plugin alone (the baseline), each timed phase by
// phase from nothing to its test pods Running (and, with weft, pinging
// across nodes), then benchPods pods created one at a time, each timed from
// its create call until a watch sees it Running. It logs the figures for
// BENCHMARKS.md and fails only when something does not work.
func TestKubeletBench(t *testing.T) {
	if os.Getenv(EnvBench) != "1" {
		t.Skipf("set %s=1 (and %s=1) to run the real-node benchmark", EnvBench, EnvKubelet)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Minute)
	defer cancel()
	type result struct {
		name   string
		up     time.Duration
		phases []Phase
		lat    []time.Duration
	}
	var results []result
	for _, mode := range []struct {
		name   string
		bridge bool
	}{{"weft (vxlan)", false}, {"bridge plugin alone", true}} {
		begin := time.Now()
		l := startLabWith(t, ctx, func(o *Options) { o.BridgeOnly = mode.bridge })
		r := result{name: mode.name, phases: l.Phases()}
		if !mode.bridge {
			pings, err := l.PingAll(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range pings {
				if p.Err != nil {
					t.Fatalf("ping %v", p)
				}
			}
			r.phases = append(r.phases, Phase{Name: "ping matrix", Took: time.Since(begin) - sum(r.phases)})
		}
		r.up = time.Since(begin)
		lat, err := createPods(ctx, l.ControlPlane().AdminKubeconfig(), l.cl.Lab().Topology().ServiceNS(), benchPods)
		if err != nil {
			t.Fatal(err)
		}
		r.lat = lat
		results = append(results, r)
		l.down()
	}
	for _, r := range results {
		t.Logf("%s: up to pods Running%s in %v", r.name, map[bool]string{true: " and pinging", false: ""}[strings.HasPrefix(r.name, "weft")],
			r.up.Round(time.Millisecond))
		for _, p := range r.phases {
			t.Logf("  %-55s %v", p.Name, p.Took.Round(time.Millisecond))
		}
	}
	w, b := results[0].lat, results[1].lat
	t.Logf("pod create to Running, %d pods one at a time: weft p50 %v p95 %v; bridge alone p50 %v p95 %v; ratio p50 %.2fx p95 %.2fx",
		benchPods, pct(w, 50), pct(w, 95), pct(b, 50), pct(b, 95),
		float64(pct(w, 50))/float64(pct(b, 50)), float64(pct(w, 95))/float64(pct(b, 95)))
}

func sum(ps []Phase) time.Duration {
	var d time.Duration
	for _, p := range ps {
		d += p.Took
	}
	return d
}

// pct returns the p-th percentile (nearest rank) of ds.
func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)].Round(time.Millisecond)
}

// createPods creates n busybox pods in TestNamespace one at a time and
// returns, for each, the time from its create call until a watch saw it
// Running. The API server listens in namespace ns.
func createPods(ctx context.Context, kubeconfig, ns string, n int) ([]time.Duration, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return lab.DialContext(ctx, ns, network, addr)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	pods := cs.CoreV1().Pods(TestNamespace)
	var out []time.Duration
	for i := range n {
		name := fmt.Sprintf("bench-%d", i)
		w, err := pods.Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String()})
		if err != nil {
			return nil, err
		}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "bench"}},
			Spec: corev1.PodSpec{
				TerminationGracePeriodSeconds: new(int64),
				Containers: []corev1.Container{{Name: "sleep", Image: BusyboxImage, ImagePullPolicy: corev1.PullNever,
					Command: []string{"/bin/sleep", "3600"}}},
			},
		}
		begin := time.Now()
		if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			w.Stop()
			return nil, fmt.Errorf("create %s: %w", name, err)
		}
		timeout := time.After(2 * time.Minute)
	wait:
		for {
			select {
			case ev, ok := <-w.ResultChan():
				if !ok {
					w.Stop()
					return nil, fmt.Errorf("%s: the watch ended", name)
				}
				if p, isPod := ev.Object.(*corev1.Pod); isPod && p.Status.Phase == corev1.PodRunning {
					out = append(out, time.Since(begin))
					break wait
				}
			case <-timeout:
				w.Stop()
				return nil, fmt.Errorf("%s not Running after 2 minutes", name)
			}
		}
		w.Stop()
	}
	return out, nil
}
