//go:build linux

package e2e

// NetworkPolicy benchmarks (make bench-netpol), each figure next to a
// baseline measured in the same run on the same lab, as the lab bench does
// (internal/lab/bench): the machine is shared, so only ratios within one
// run mean anything.
//
//   - TestNetpolBenchDataPath: pod-to-pod TCP throughput (iperf3, as the lab
//     bench measures it) and new TCP connections per second, across the two
//     nodes (vxlan) and on one node, with 100 policies selecting the pods
//     against the same pods with weft's table taken out of the kernel, and
//     against pods no policy selects (also at the same time); the 100
//     policies all allowing the bench's ports (the worst case) and allowing
//     other ports.
//   - TestNetpolBenchEnforce (netpol_scale_test.go): policy created to
//     rules in the kernel, p50 and p95, with 1,000 policies and 10,000 pods
//     in the API; weftd's RSS with that set against a weftd without
//     --network-policy in the same lab.
//
// They log their figures and fail only when something does not work.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weft-net/weft/deploy"
	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/bench"
	"github.com/weft-net/weft/internal/lab/cluster"

	"github.com/weft-net/weft/internal/testenv"
)

// envBenchNetpol selects the NetworkPolicy benchmarks (make bench-netpol).
const envBenchNetpol = "WEFT_BENCH_NETPOL"

func needBenchNetpol(t *testing.T) {
	t.Helper()
	if os.Getenv(envBenchNetpol) != "1" {
		t.Skipf("set %s=1 to run the NetworkPolicy benchmarks (make bench-netpol; minutes each)", envBenchNetpol)
	}
	needRoot(t)
}

// The data-path bench's shape.
const (
	dpPolicies = 100
	dpRuns     = 12
	dpDuration = time.Second
	dpConnPort = 7000
	dpDenyPort = 7001
	dpNS       = "dp"
)

// dpVariant is one of the compared set-ups of the same two paths.
type dpVariant string

const (
	dpPoliced dpVariant = "100 policies"
	dpPlain   dpVariant = "no policy selects the pods"
	dpNoTable dpVariant = "no policy table in the kernel"
)

// dpPath is a client and a server pod.
type dpPath struct {
	name           string // "2 nodes (vxlan)" or "1 node"
	client, server cluster.Pod
}

// dpShape is how the 100 policies' ports relate to the bench's traffic.
type dpShape string

const (
	// dpSharedPort: every policy allows the bench's ports, 99 of them from
	// addresses the bench never uses. The node's lookup by port leads to
	// all 100, which it runs in order (by name) until the last accepts:
	// the worst case.
	dpSharedPort dpShape = "shared-port"
	// dpOtherPorts: the 99 allow other ports (9000-9098), so the lookup by
	// port skips them.
	dpOtherPorts dpShape = "other-ports"
)

// dpPolicy is policy i of the 100: each selects the pods labelled
// bench=policed, for ingress and egress, and names its ports in every rule.
// The first 99 allow only what the bench never sends (addresses of the
// documentation ranges; with dpOtherPorts, other ports too); the last one,
// last in the order the node runs them (by name), allows the bench's ports
// between bench=policed pods in its second rule. With dpSharedPort a
// connection's first packet runs every policy's chain, on the client's node
// (egress) and on the server's (ingress), before it is accepted.
func dpPolicy(i int, shape dpShape) string {
	name := fmt.Sprintf("np-%03d", i)
	if i < dpPolicies-1 {
		ports := fmt.Sprintf("[{port: %d}]", 9000+i)
		if shape == dpSharedPort {
			ports = fmt.Sprintf("[{port: %d}, {port: %d}]", bench.IperfPort, dpConnPort)
		}
		return fmt.Sprintf(`metadata: {name: %s, namespace: NS}
spec:
  podSelector: {matchLabels: {bench: policed}}
  policyTypes: [Ingress, Egress]
  ingress: [{from: [{ipBlock: {cidr: 192.0.2.%d/32}}], ports: %s}]
  egress: [{to: [{ipBlock: {cidr: 198.51.100.%d/32}}], ports: %s}]
`, name, i, ports, i, ports)
	}
	return fmt.Sprintf(`metadata: {name: %s, namespace: NS}
spec:
  podSelector: {matchLabels: {bench: policed}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{ipBlock: {cidr: 203.0.113.0/24}}]
    ports: [{port: %[2]d}, {port: %[3]d}]
  - from: [{podSelector: {matchLabels: {bench: policed}}}]
    ports: [{port: %[2]d}, {port: %[3]d}]
  egress:
  - to: [{ipBlock: {cidr: 203.0.113.0/24}}]
    ports: [{port: %[2]d}, {port: %[3]d}]
  - to: [{podSelector: {matchLabels: {bench: policed}}}]
    ports: [{port: %[2]d}, {port: %[3]d}]
`, name, bench.IperfPort, dpConnPort)
}

// TestNetpolBenchDataPath measures what 100 policies selecting both ends
// cost the data path, for each dpShape: TCP throughput (1 stream, iperf3, 1 s) and new TCP
// connections per second (connect, then close with a reset; two
// connecting goroutines, 1 s), client to server across two nodes (vxlan)
// and on one node (the bridge, through br_netfilter). Many short runs
// rather than a few long ones: on a shared machine the load changes by the
// second. Each run measures every variant of both paths in turn: the
// policed pods; the same pods with weft's table taken out of the kernel
// (weft without NetworkPolicy); and pods of the same nodes that no policy
// selects. weftd is stopped for the runs (the rules stay in the kernel), so
// that the table can be taken out and put back between runs without weftd
// repairing it. Then the policed and the unselected paths run side by side
// (dpSideBySide).
func TestNetpolBenchDataPath(t *testing.T) {
	needBenchNetpol(t)
	for _, shape := range []dpShape{dpSharedPort, dpOtherPorts} {
		t.Run(string(shape), func(t *testing.T) { testNetpolBenchDataPath(t, shape) })
	}
}

func testNetpolBenchDataPath(t *testing.T, shape dpShape) {
	c := upKube(t, cluster.Options{Lab: lab.Options{Nodes: 2},
		WeftdArgs: []string{"--network-policy", "--ip-masq"}, Manifest: deploy.NetpolManifest})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Minute)
	defer cancel()
	// n1p1 serves the policed clients n1p2 and n2p1; n1p3 serves the
	// unpoliced n1p4 and n2p2.
	for _, np := range [][2]int{{1, 1}, {1, 2}, {1, 3}, {1, 4}, {2, 1}, {2, 2}} {
		if _, err := c.AddPod(ctx, np[0], np[1]); err != nil {
			t.Fatal(err)
		}
	}
	registerPods(t, c, dpNS, dpConnPort)
	pod := map[string]cluster.Pod{}
	for _, p := range c.Pods() {
		name := fmt.Sprintf("n%dp%d", p.Node, p.Index)
		pod[name] = p
		label := "bench=plain"
		if name == "n1p1" || name == "n1p2" || name == "n2p1" {
			label = "bench=policed"
		}
		kubectl(t, c, "", "-n", dpNS, "label", "pod", name, label)
	}
	var docs []string
	for i := range dpPolicies {
		docs = append(docs, "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"+strings.ReplaceAll(dpPolicy(i, shape), "NS", dpNS))
	}
	kubectl(t, c, strings.Join(docs, "---\n"), "apply", "-f", "-")

	policed := []dpPath{{"2 nodes (vxlan)", pod["n2p1"], pod["n1p1"]}, {"1 node", pod["n1p2"], pod["n1p1"]}}
	plain := []dpPath{{"2 nodes (vxlan)", pod["n2p2"], pod["n1p3"]}, {"1 node", pod["n1p4"], pod["n1p3"]}}
	dpServe(t, pod["n1p1"])
	dpServe(t, pod["n1p3"])
	dpWaitEnforced(t, c, policed[0])
	for n := 1; n <= 2; n++ {
		dpCheckOrder(t, c, n, shape)
	}
	for _, p := range append(slices.Clone(policed), plain...) {
		if !connects(t, p.client, v4(t, p.server), dpConnPort, 2*time.Second) {
			t.Fatalf("%s: %s cannot connect to %s:%d", p.name, p.client.NS, v4(t, p.server), dpConnPort)
		}
	}
	for n := 1; n <= 2; n++ {
		if err := c.KillWeftd(n, false); err != nil {
			t.Fatal(err)
		}
	}
	res := dpMeasure(t, ctx, c, policed, plain)
	dpReport(t, res)
	dpSideBySide(t, ctx, policed, plain)
}

// v4 returns a pod's IPv4 address.
func v4(t *testing.T, p cluster.Pod) netip.Addr {
	t.Helper()
	for _, a := range p.Addrs {
		if a.Is4() {
			return a
		}
	}
	t.Fatalf("pod %s has no IPv4 address", p.NS)
	return netip.Addr{}
}

// dpServe starts iperf3's server, a server that accepts and closes
// connections on dpConnPort, and one on dpDenyPort (which no policy
// allows), in the server pod.
func dpServe(t *testing.T, p cluster.Pod) {
	t.Helper()
	stop, err := bench.Iperf{Proc: bench.Proc{Root: "/proc"}}.StartServer(context.Background(), p.NS, v4(t, p))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	for _, port := range []int{dpConnPort, dpDenyPort} {
		var ln net.Listener
		if err := lab.Do(p.NS, func() (err error) {
			ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ln.Close() })
		go func() {
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				_ = conn.Close()
			}
		}()
	}
}

// dpWaitEnforced waits until the policies hold on both nodes: p's client
// reaches its server's allowed port and not dpDenyPort.
func dpWaitEnforced(t *testing.T, c *cluster.Cluster, p dpPath) {
	t.Helper()
	took := testenv.WaitFor(t, 60*time.Second, "the 100 policies enforced", func() bool {
		return !connects(t, p.client, v4(t, p.server), dpDenyPort, 300*time.Millisecond)
	})
	t.Logf("%d policies enforced %v after kubectl apply returned", dpPolicies, took.Round(time.Millisecond))
}

var jumpRe = regexp.MustCompile(`jump (\S+)`)

// dpCheckOrder waits until node n holds the 100 policies, and checks
// their path. dpSharedPort: a chain jumps to the 100 policies' chains,
// np-099's last. dpOtherPorts: a chain looks the port up and jumps to
// np-099's chain for the bench's ports and to another policy's for each
// of the 99 others.
func dpCheckOrder(t *testing.T, c *cluster.Cluster, n int, shape dpShape) {
	t.Helper()
	var table string
	found := 0
	lastName := fmt.Sprintf("of %s/np-%03d", dpNS, dpPolicies-1)
	took := testenv.WaitFor(t, 2*time.Minute, fmt.Sprintf("node n%d: a chain leading to the %d policies", n, dpPolicies), func() bool {
		table = run(t, c.NodeNS(n), "nft", "list", "table", "inet", "weft-netpol")
		chains := map[string]string{}
		for _, chain := range strings.Split(table, "\tchain ")[1:] {
			name, body, _ := strings.Cut(chain, " {")
			chains[name] = body
		}
		found = 0
		for name, body := range chains {
			jumps := jumpRe.FindAllStringSubmatch(body, -1)
			switch {
			case shape == dpSharedPort && len(jumps) == dpPolicies:
				if last := jumps[len(jumps)-1][1]; !strings.Contains(chains[last], lastName) {
					t.Fatalf("node n%d: chain %s jumps last to %s, which is not np-%03d's:\n%s", n, name, last, dpPolicies-1, table)
				}
				found++
			case shape == dpOtherPorts && len(jumps) == dpPolicies+1: // the bench's two ports lead to np-099
				for _, port := range []int{bench.IperfPort, dpConnPort} {
					m := regexp.MustCompile(fmt.Sprintf(`tcp \. %d : jump ([^\s,}]+)`, port)).FindStringSubmatch(body)
					if m == nil || !strings.Contains(chains[m[1]], lastName) {
						t.Fatalf("node n%d: chain %s does not send port %d to np-%03d's chain:\n%s", n, name, port, dpPolicies-1, table)
					}
				}
				found++
			}
		}
		return found > 0
	})
	t.Logf("node n%d (%s): %d chains of selected pods lead to the %d policies' chains (%v after the check began)",
		n, shape, found, dpPolicies, took.Round(time.Millisecond))
}

// dpResult holds, per path and variant, each run's figures, in run order.
type dpResult struct {
	gbps, conns map[string][]float64 // key: path + "|" + variant
	fails       map[string]int
}

func dpKey(path string, v dpVariant) string { return path + "|" + string(v) }

// dpMeasure runs dpRuns rounds; each measures both paths in every variant,
// the variants in an order that rotates from round to round, so that each
// round's figures can be compared with each other (dpReport's paired
// ratios) and no variant always comes first.
func dpMeasure(t *testing.T, ctx context.Context, c *cluster.Cluster, policed, plain []dpPath) *dpResult {
	t.Helper()
	r := &dpResult{gbps: map[string][]float64{}, conns: map[string][]float64{}, fails: map[string]int{}}
	saved := map[int]string{}
	for n := 1; n <= 2; n++ {
		saved[n] = run(t, c.NodeNS(n), "nft", "list", "table", "inet", "weft-netpol")
	}
	variants := []func(){
		func() {
			for _, p := range policed {
				dpOnce(t, ctx, r, p, dpPoliced)
			}
		},
		func() {
			for _, p := range plain {
				dpOnce(t, ctx, r, p, dpPlain)
			}
		},
		func() {
			for n := 1; n <= 2; n++ {
				run(t, c.NodeNS(n), "nft", "delete", "table", "inet", "weft-netpol")
			}
			for _, p := range policed {
				dpOnce(t, ctx, r, p, dpNoTable)
			}
			for n := 1; n <= 2; n++ {
				dpRestore(t, ctx, c, n, saved[n])
			}
		},
	}
	for round := range dpRuns {
		t.Logf("round %d/%d (load average %s)", round+1, dpRuns, loadAvg())
		for i := range variants {
			variants[(round+i)%len(variants)]()
		}
	}
	return r
}

var countersRe = regexp.MustCompile(`packets \d+ bytes \d+`)

// dpRestore puts node n's table back as it was listed, and checks that it
// lists the same (but for the counters' values).
func dpRestore(t *testing.T, ctx context.Context, c *cluster.Cluster, n int, table string) {
	t.Helper()
	cmd := lab.Command(ctx, c.NodeNS(n), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(table)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("node n%d: restore the table: %v\n%s", n, err, out)
	}
	got := run(t, c.NodeNS(n), "nft", "list", "table", "inet", "weft-netpol")
	if countersRe.ReplaceAllString(got, "") != countersRe.ReplaceAllString(table, "") {
		t.Fatalf("node n%d: the restored table differs from weftd's:\n%s\nwant:\n%s", n, got, table)
	}
}

// dpOnce measures one path in one variant: throughput, then new
// connections per second.
func dpOnce(t *testing.T, ctx context.Context, r *dpResult, p dpPath, v dpVariant) {
	t.Helper()
	ip := bench.Iperf{Proc: bench.Proc{Root: "/proc"}}
	tr, err := ip.Run(ctx, p.client.NS, v4(t, p.server), 1, dpDuration)
	if err != nil {
		t.Fatalf("%s, %s: %v", p.name, v, err)
	}
	rate, fails, err := connRate(ctx, p.client.NS, netip.AddrPortFrom(v4(t, p.server), dpConnPort), dpDuration, 2)
	if err != nil {
		t.Fatalf("%s, %s: %v", p.name, v, err)
	}
	k := dpKey(p.name, v)
	r.fails[k] += fails
	r.gbps[k] = append(r.gbps[k], tr.BitsPerSecond/1e9)
	r.conns[k] = append(r.conns[k], rate)
	t.Logf("  %-16s %-32s %6.2f Gbit/s %8.0f conn/s (%d failed)", p.name, v, tr.BitsPerSecond/1e9, rate, fails)
}

// connRate connects from namespace ns to dst, workers connections at a
// time, for d, each closed with a reset as soon as it is open (no
// TIME_WAIT, so ports are reused at once; each connection is a new
// conntrack entry), and returns the connections per second and how many
// failed.
func connRate(ctx context.Context, ns string, dst netip.AddrPort, d time.Duration, workers int) (float64, int, error) {
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	begin := time.Now()
	end := begin.Add(d)
	for range workers {
		wg.Go(func() {
			errs <- lab.Do(ns, func() error {
				dialer := net.Dialer{Timeout: 3 * time.Second} // a SYN lost to the load is sent again after 1 s
				for time.Now().Before(end) && ctx.Err() == nil {
					conn, err := dialer.DialContext(ctx, "tcp", dst.String())
					if err != nil {
						failed.Add(1)
						continue
					}
					_ = conn.(*net.TCPConn).SetLinger(0)
					_ = conn.Close()
					ok.Add(1)
				}
				return nil
			})
		})
	}
	wg.Wait()
	close(errs)
	var err error
	for e := range errs {
		err = errors.Join(err, e)
	}
	return float64(ok.Load()) / time.Since(begin).Seconds(), int(failed.Load()), err
}

// dpReport logs the figures: medians over the runs with their range, the
// ratio of the medians against each baseline, and the median and range of
// the ratios within each round (paired: the same minute of the machine's
// load).
func dpReport(t *testing.T, r *dpResult) {
	t.Helper()
	for k, n := range r.fails {
		if n > 0 {
			t.Errorf("%s: %d allowed connections failed", k, n)
		}
	}
	t.Logf("load average at the end: %s", loadAvg())
	for _, fig := range []struct {
		name, unit string
		runs       map[string][]float64
	}{{"TCP throughput, 1 stream", "Gbit/s", r.gbps}, {"new TCP connections", "conn/s", r.conns}} {
		for _, path := range []string{"2 nodes (vxlan)", "1 node"} {
			pol, none, plain := fig.runs[dpKey(path, dpPoliced)], fig.runs[dpKey(path, dpNoTable)], fig.runs[dpKey(path, dpPlain)]
			sp, sn, sl := bench.Summarise(pol), bench.Summarise(none), bench.Summarise(plain)
			t.Logf("%s, %s: 100 policies %s; no table %s; unselected pods %s", fig.name, path,
				statText(sp, fig.unit), statText(sn, fig.unit), statText(sl, fig.unit))
			t.Logf("  100 policies / no table: %.3fx (ratio of medians), paired %s; 100 policies / unselected pods: %.3fx, paired %s; "+
				"unselected / no table: %.3fx, paired %s", sp.Median/sn.Median, paired(pol, none), sp.Median/sl.Median, paired(pol, plain),
				sl.Median/sn.Median, paired(plain, none))
		}
	}
}

// dpSideBySide runs the policed and the unselected path at the same time,
// dpRuns times per path (iperf3 both at once, then new connections both at
// once: one goroutine each), and logs the median and range of the ratios:
// the two flows share the machine's load second by second, and where the
// CPU is the limit, the one that costs more per byte or per connection
// gets less of it.
func dpSideBySide(t *testing.T, ctx context.Context, policed, plain []dpPath) {
	t.Helper()
	ip := bench.Iperf{Proc: bench.Proc{Root: "/proc"}}
	for i := range policed {
		var gbps, conns [2][]float64
		for range dpRuns {
			var wg sync.WaitGroup
			var tr [2]bench.Transfer
			var errs [2]error
			for j, p := range []dpPath{policed[i], plain[i]} {
				wg.Go(func() { tr[j], errs[j] = ip.Run(ctx, p.client.NS, v4(t, p.server), 1, 2*dpDuration) })
			}
			wg.Wait()
			var rate [2]float64
			var fails [2]int
			for j, p := range []dpPath{policed[i], plain[i]} {
				wg.Go(func() {
					if errs[j] == nil {
						rate[j], fails[j], errs[j] = connRate(ctx, p.client.NS, netip.AddrPortFrom(v4(t, p.server), dpConnPort), 2*dpDuration, 1)
					}
				})
			}
			wg.Wait()
			for j := range 2 {
				if errs[j] != nil || fails[j] > 0 {
					t.Fatalf("%s side by side: %v, %d connections failed", policed[i].name, errs[j], fails[j])
				}
				gbps[j] = append(gbps[j], tr[j].BitsPerSecond/1e9)
				conns[j] = append(conns[j], rate[j])
			}
		}
		t.Logf("side by side, %s: TCP throughput 100 policies %s, unselected pods %s: paired %s; new connections 100 policies %s, "+
			"unselected pods %s: paired %s (load average %s)", policed[i].name,
			statText(bench.Summarise(gbps[0]), "Gbit/s"), statText(bench.Summarise(gbps[1]), "Gbit/s"), paired(gbps[0], gbps[1]),
			statText(bench.Summarise(conns[0]), "conn/s"), statText(bench.Summarise(conns[1]), "conn/s"), paired(conns[0], conns[1]), loadAvg())
	}
}

// paired returns the median and range of a[i]/b[i].
func paired(a, b []float64) string {
	var rs []float64
	for i := range min(len(a), len(b)) {
		rs = append(rs, a[i]/b[i])
	}
	s := bench.Summarise(rs)
	return fmt.Sprintf("%.3fx (%.2f-%.2f)", s.Median, s.Min, s.Max)
}

func statText(s bench.Stat, unit string) string {
	return fmt.Sprintf("%.3g %s (%.3g-%.3g, %d runs)", s.Median, unit, s.Min, s.Max, s.N)
}

// loadAvg returns the machine's load averages (1, 5, 15 minutes).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
