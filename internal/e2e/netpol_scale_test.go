//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/weft-net/weft/deploy"
	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/cluster"
	"github.com/weft-net/weft/internal/metrics"

	"github.com/weft-net/weft/internal/testenv"
)

// The scale of TestNetpolBenchEnforce: pods spread over scaleNamespaces
// namespaces and scaleFakeNodes nodes that do not exist, but for two per
// namespace, one on each real node (addresses of the node's podCIDR, as a
// kubelet reports them; no pod runs there). Every policy selects the two
// real-node pods of its namespace (internal/netpol's BenchmarkCompile
// compiles the same cluster without a kernel).
const (
	scaleNamespaces = 20
	scalePods       = 10000
	scalePolicies   = 1000
	scaleFakeNodes  = 100
	scaleTrials     = 40
	scaleWorkers    = 16
)

// TestNetpolBenchEnforce: a kube lab of three nodes; n1 and n2 run weftd
// --network-policy, n3 runs weftd without it (the baseline of the RSS).
// 10,000 pods (created, then their status set, each by the API's pods and
// pods/status, scaleWorkers requests at a time) and 1,000 policies are put
// into the API; then, scaleTrials times, one more policy selecting a pod of
// each real node is created and timed from the create call's return to its
// chain being added to each node's table (seen by `nft monitor` in the
// node's namespace), and to weftd's own figure for that change
// (weft_netpol_change_to_kernel_seconds: its sum and count before and
// after); then deleted, timed the same way. It logs p50, p95 and the
// worst, the setup's times and the weftds' RSS.
func TestNetpolBenchEnforce(t *testing.T) {
	needBenchNetpol(t)
	c := upKube(t, cluster.Options{Lab: lab.Options{Nodes: 3}, Idle: []int{3}, Pods: 1,
		WeftdArgs: []string{"--network-policy", "--ip-masq"}, Manifest: deploy.NetpolManifest})
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Minute)
	defer cancel()
	basePid := startPlainWeftd(t, ctx, c, 3)
	rssEmpty := rssMiB(t, c.Pid(1))
	cs := adminClientset(t, c)

	begin := time.Now()
	scaleObjects(t, ctx, c, cs)
	setup := time.Since(begin)
	settled := waitSettled(t, c, scalePolicies)
	t.Logf("setup: %d namespaces, %d pods (%d on the real nodes), %d policies in %v; both nodes enforcing them %v later (load average %s)",
		scaleNamespaces, scalePods, 2*scaleNamespaces, scalePolicies, setup.Round(time.Millisecond), settled.Round(time.Millisecond), loadAvg())
	for n := 1; n <= 2; n++ {
		f := scrapeNode(t, c, n)
		t.Logf("node n%d: %v policies, %v rules, %v set elements, %v syncs, sync time mean %.1f ms",
			n, f.Value("weft_netpol_policies", nil), f.Value("weft_netpol_rules", nil), f.Value("weft_netpol_set_elements", nil),
			f.Value("weft_netpol_syncs_total", nil), 1000*histMean(f, "weft_netpol_sync_seconds"))
	}
	// What nft itself costs on a table this size: every write (knftables
	// runs nft -f) first lists what it refers to.
	for _, argv := range [][]string{{"nft", "list", "table", "inet", "weft-netpol"}, {"nft", "-c", "add chain inet weft-netpol bench-check"}} {
		begin := time.Now()
		for range 3 {
			run(t, c.NodeNS(1), argv...)
		}
		t.Logf("node n1: %s: %v each (mean of 3)", strings.Join(argv, " "), (time.Since(begin) / 3).Round(time.Millisecond))
	}
	scaleLiveCheck(t, c)

	var rss, base []float64
	for range 5 {
		rss, base = append(rss, rssMiB(t, c.Pid(1))), append(base, rssMiB(t, basePid))
		time.Sleep(time.Second)
	}
	t.Logf("weftd RSS on n1 with --network-policy: %.1f MiB before the objects, %.1f MiB (median of 5, max %.1f) with them; "+
		"weftd on n3 without it: %.1f MiB (max %.1f); difference %+.1f MiB",
		rssEmpty, median(rss), slices.Max(rss), median(base), slices.Max(base), median(rss)-median(base))

	trials := enforceTrials(t, ctx, c, cs)
	t.Logf("load average after the trials: %s (sync: weftd's weft_netpol_sync_seconds, compile and write, for the same changes)", loadAvg())
	for _, k := range []string{"create: n1", "create: n2", "create: both", "create: weftd n1", "create: weftd n2",
		"create: sync n1", "create: sync n2", "delete: n1", "delete: n2", "delete: both", "delete: weftd n1", "delete: weftd n2",
		"delete: sync n1", "delete: sync n2"} {
		ds := trials[k]
		t.Logf("%-17s p50 %7.1f ms  p95 %7.1f ms  max %7.1f ms  (%d trials)", k, ms(pct(ds, 50)), ms(pct(ds, 95)), ms(slices.Max(ds)), len(ds))
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// pct returns the p-th percentile (nearest rank) of ds.
func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	i := (len(s)*p + 99) / 100
	return s[max(i, 1)-1]
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// rssMiB returns a process's resident set in MiB.
func rssMiB(t *testing.T, pid int) float64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		var kb float64
		if _, err := fmt.Sscanf(l, "VmRSS: %f kB", &kb); err == nil {
			return kb / 1024
		}
	}
	t.Fatalf("no VmRSS for pid %d", pid)
	return 0
}

// startPlainWeftd registers idle node n and starts its weftd with the
// lab's flags but --network-policy; it returns the pid.
func startPlainWeftd(t *testing.T, ctx context.Context, c *cluster.Cluster, n int) int {
	t.Helper()
	if err := c.RegisterNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitPodCIDR(ctx, n); err != nil {
		t.Fatal(err)
	}
	args := slices.DeleteFunc(c.WeftdArgs(n), func(a string) bool { return a == "--network-policy" })
	if err := os.MkdirAll(c.NodeDir(n), 0o755); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(c.LogFile(n))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env, cmd.Stdout, cmd.Stderr = c.WeftdEnv(n), logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := lab.StartIn(c.NodeNS(n), cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); _ = logf.Close() })
	testenv.WaitFor(t, 60*time.Second, fmt.Sprintf("weftd without --network-policy ready on n%d", n), func() bool {
		ok, _ := c.Ready(ctx, n)
		return ok
	})
	return cmd.Process.Pid
}

// adminClientset returns a client of the lab's API server as its admin,
// dialing from the switch namespace, not rate-limited.
func adminClientset(t *testing.T, c *cluster.Cluster) *kubernetes.Clientset {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kube().AdminKubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	sw := c.Lab().Topology().ServiceNS()
	cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return lab.DialContext(ctx, sw, network, addr)
	}
	cfg.QPS, cfg.Burst = -1, 0
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// parallel runs fn(i) for i in [0, n), workers at a time, and returns the
// first error.
func parallel(ctx context.Context, n, workers int, fn func(context.Context, int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := fn(ctx, i); err != nil {
					cancel(err)
				}
			}
		})
	}
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	return context.Cause(ctx)
}

func nsName(n int) string { return fmt.Sprintf("ns%03d", n) }

// scaleObjects creates the namespaces, pods and policies, each step timed.
func scaleObjects(t *testing.T, ctx context.Context, c *cluster.Cluster, cs *kubernetes.Clientset) {
	t.Helper()
	var cidr [2]netip.Prefix
	for n := 1; n <= 2; n++ {
		ps, err := c.PodCIDRs(ctx, n)
		if err != nil || len(ps) == 0 {
			t.Fatalf("podCIDR of n%d: %v %v", n, ps, err)
		}
		cidr[n-1] = ps[0]
	}
	step := func(what string, n int, fn func(context.Context, int) error) {
		begin := time.Now()
		if err := parallel(ctx, n, scaleWorkers, fn); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		took := time.Since(begin)
		t.Logf("  %-28s %6d in %8v (%.0f/s)", what, n, took.Round(time.Millisecond), float64(n)/took.Seconds())
	}
	step("namespaces", scaleNamespaces, func(ctx context.Context, i int) error {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName(i),
			Labels: map[string]string{"team": fmt.Sprintf("t%d", i%5)}}}, metav1.CreateOptions{})
		return err
	})
	step("pods created and Running", scalePods, func(ctx context.Context, i int) error {
		return createPod(ctx, cs, i, cidr)
	})
	step("policies", scalePolicies, func(ctx context.Context, j int) error {
		_, err := cs.NetworkingV1().NetworkPolicies(nsName(j%scaleNamespaces)).Create(ctx, scalePolicy(j), metav1.CreateOptions{})
		return err
	})
}

// createPod creates pod i of the scale and sets its status: Running, with
// its address. Pod k of namespace n (i = k*scaleNamespaces + n) is on n1
// when k is 0, on n2 when k is 1, else on a node that does not exist.
func createPod(ctx context.Context, cs *kubernetes.Clientset, i int, cidr [2]netip.Prefix) error {
	n, k := i%scaleNamespaces, i/scaleNamespaces
	labels := map[string]string{"app": fmt.Sprintf("a%d", k%25)}
	node := fmt.Sprintf("fake-%03d", i%scaleFakeNodes)
	ip := addrPlus(netip.MustParseAddr("10.128.0.1"), i)
	if k < 2 {
		node, ip = cluster.NodeName(k+1), addrPlus(cidr[k].Addr(), 100+n)
	}
	if k < 2 || k%10 == 0 {
		labels["tier"] = "web"
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%05d", i), Namespace: nsName(n), Labels: labels},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "weft.local/none",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}}}}}
	created, err := cs.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	created.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip.String(), PodIPs: []corev1.PodIP{{IP: ip.String()}}}
	_, err = cs.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{})
	return err
}

func addrPlus(a netip.Addr, n int) netip.Addr {
	for range n {
		a = a.Next()
	}
	return a
}

// scalePolicy is policy j (internal/netpol's benchAddPolicy): it selects
// tier=web and allows TCP 8000+j%100 from app=a<j%25>; every tenth also
// from app=a0 of team t<j%5>'s namespaces; every fourth restricts egress
// to 10.0.0.0/8 but a /16.
func scalePolicy(j int) *networkingv1.NetworkPolicy {
	tcp := corev1.ProtocolTCP
	port := intstr.FromInt32(int32(8000 + j%100))
	from := []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{
		MatchLabels: map[string]string{"app": fmt.Sprintf("a%d", j%25)}}}}
	if j%10 == 0 {
		from = append(from, networkingv1.NetworkPolicyPeer{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", j%5)}},
			PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": "a0"}}})
	}
	p := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pol%04d", j), Namespace: nsName(j % scaleNamespaces)},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"tier": "web"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: from,
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}}}},
		}}
	if j%4 == 0 {
		p.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
		p.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{
			IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{fmt.Sprintf("10.%d.0.0/16", j%200)}}}}}}
	}
	return p
}

// waitSettled waits until weftd on n1 and n2 enforces want policies and has
// not written for 3 s, and returns how long that took.
func waitSettled(t *testing.T, c *cluster.Cluster, want int) time.Duration {
	t.Helper()
	begin := time.Now()
	var last [2]float64
	stable := time.Now()
	testenv.WaitFor(t, 10*time.Minute, fmt.Sprintf("both nodes enforcing %d policies, settled", want), func() bool {
		all := true
		for n := 1; n <= 2; n++ {
			f := scrapeNode(t, c, n)
			syncs := f.Value("weft_netpol_syncs_total", nil)
			if syncs != last[n-1] {
				last[n-1], stable = syncs, time.Now()
			}
			all = all && int(f.Value("weft_netpol_policies", nil)) == want && f.Value("weft_netpol_enforcing", nil) == 1
		}
		if !all {
			stable = time.Now()
		}
		time.Sleep(200 * time.Millisecond)
		return time.Since(stable) > 3*time.Second
	})
	return time.Since(begin) - 3*time.Second
}

// histMean returns a histogram's mean, 0 when it has no sample.
func histMean(f metrics.Families, name string) float64 {
	sum, n := histSumCount(f, name)
	if n == 0 {
		return 0
	}
	return sum / n
}

func histSumCount(f metrics.Families, name string) (sum, count float64) {
	fam := f[name]
	if fam == nil {
		return 0, 0
	}
	for _, m := range fam.Metric {
		if h := m.Histogram; h != nil {
			sum += h.GetSampleSum()
			count += float64(h.GetSampleCount())
		}
	}
	return sum, count
}

// scaleLiveCheck: with the whole set in force, a policy denying n1p1's
// ingress cuts n2p1 off from it, and deleting it lets it through again.
func scaleLiveCheck(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	const ns, port = "live", 8080
	registerPods(t, c, ns, port)
	pods := c.Pods()
	for _, p := range pods {
		echoIn(t, p.NS, port)
	}
	dst := v4(t, pods[0])
	if !connects(t, pods[1], dst, port, 2*time.Second) {
		t.Fatal("n2p1 cannot reach n1p1 before any policy of its namespace")
	}
	applyPolicy(t, c, ns, "metadata: {name: deny, namespace: NS}\nspec: {podSelector: {matchLabels: {pod: n1p1}}, policyTypes: [Ingress]}\n")
	took := testenv.WaitFor(t, time.Minute, "n2p1 denied to n1p1", func() bool { return !connects(t, pods[1], dst, port, 200*time.Millisecond) })
	kubectl(t, c, "", "-n", ns, "delete", "networkpolicy", "deny")
	took2 := testenv.WaitFor(t, time.Minute, "n2p1 allowed to n1p1 again", func() bool { return connects(t, pods[1], dst, port, 200*time.Millisecond) })
	t.Logf("at scale, a real connection: denied %v after kubectl apply returned, allowed again %v after kubectl delete returned",
		took.Round(time.Millisecond), took2.Round(time.Millisecond))
}

// enforceTrials creates and deletes scaleTrials policies one at a time and
// returns the times, by "create: n1" (create returned to the chain added
// on n1), "create: both" (on both nodes), "create: weftd n1" (weftd's
// change_to_kernel for that change), and the same for "delete: ...".
func enforceTrials(t *testing.T, ctx context.Context, c *cluster.Cluster, cs *kubernetes.Clientset) map[string][]time.Duration {
	t.Helper()
	watch := [2]*chainWatch{watchChains(t, ctx, c.NodeNS(1)), watchChains(t, ctx, c.NodeNS(2))}
	out := map[string][]time.Duration{}
	// Per node: change_to_kernel's sum and count, sync_seconds' sum and
	// count.
	hist := func() (h [2][4]float64) {
		for n := 1; n <= 2; n++ {
			f := scrapeNode(t, c, n)
			h[n-1][0], h[n-1][1] = histSumCount(f, "weft_netpol_change_to_kernel_seconds")
			h[n-1][2], h[n-1][3] = histSumCount(f, "weft_netpol_sync_seconds")
		}
		return h
	}
	// measure times one operation; it returns false, having measured
	// nothing, when a node's monitor was restarted meanwhile (the event may
	// have come while it was down).
	measure := func(op, event string, probe int, do func() error) bool {
		gens := [2]int{watch[0].probe(t, probe), watch[1].probe(t, probe)}
		before := hist()
		if err := do(); err != nil {
			t.Fatal(err)
		}
		returned := time.Now()
		var ats [2]time.Time
		for n := range 2 {
			deadline := time.Now().Add(time.Minute)
			for {
				at, ok := watch[n].at(event)
				if ok {
					ats[n] = at
					break
				}
				if watch[n].generation() != gens[n] {
					t.Logf("%s: n%d's nft monitor restarted during the trial (%s): trial left out", op, n+1, watch[n].errs)
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: %s not seen on n%d within a minute", op, event, n+1)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		// weftd's own figure: the change's sample in its histogram (more
		// than one when a change was written in two goes).
		var after [2][4]float64
		testenv.WaitFor(t, time.Minute, "weftd's histogram counting the change", func() bool {
			after = hist()
			return after[0][1] > before[0][1] && after[1][1] > before[1][1]
		})
		if ats[0].IsZero() || ats[1].IsZero() || watch[0].generation() != gens[0] || watch[1].generation() != gens[1] {
			return false
		}
		var worst time.Duration
		for n := range 2 {
			d := ats[n].Sub(returned)
			k := fmt.Sprintf("%s: n%d", op, n+1)
			out[k] = append(out[k], d)
			worst = max(worst, d)
			dc := after[n][1] - before[n][1]
			if dc != 1 {
				t.Logf("%s on n%d: %v samples for one change", op, n+1, dc)
			}
			k = fmt.Sprintf("%s: weftd n%d", op, n+1)
			out[k] = append(out[k], time.Duration((after[n][0]-before[n][0])/dc*float64(time.Second)))
			if ds := after[n][3] - before[n][3]; ds > 0 {
				k = fmt.Sprintf("%s: sync n%d", op, n+1)
				out[k] = append(out[k], time.Duration((after[n][2]-before[n][2])/ds*float64(time.Second)))
			}
		}
		out[op+": both"] = append(out[op+": both"], worst)
		return true
	}
	left := 0
	for i := 0; len(out["create: both"]) < scaleTrials; i++ {
		if i >= 2*scaleTrials {
			t.Fatalf("%d trials left out: nft monitor keeps restarting", left)
		}
		ns, name := nsName(i%scaleNamespaces), fmt.Sprintf("trial%02d", i)
		chain := policyChain(ns, name)
		tcp := corev1.ProtocolTCP
		port := intstr.FromInt32(9999)
		p := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"tier": "web"}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "a1"}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}}}},
			}}
		ok := measure("create", "add weft-netpol "+chain, 2*i, func() error {
			_, err := cs.NetworkingV1().NetworkPolicies(ns).Create(ctx, p, metav1.CreateOptions{})
			return err
		})
		ok = measure("delete", "delete weft-netpol "+chain, 2*i+1, func() error {
			return cs.NetworkingV1().NetworkPolicies(ns).Delete(ctx, name, metav1.DeleteOptions{})
		}) && ok
		if !ok {
			left++
		}
	}
	if left > 0 {
		t.Logf("%d trials left out, their monitor having restarted", left)
	}
	for n, w := range watch {
		if len(w.errs) > 0 {
			t.Logf("n%d: nft monitor exited %d times: %v", n+1, len(w.errs), w.errs)
		}
	}
	return out
}
