//go:build linux

package e2e

// Kube mode end to end: weftd --kube-subnet-mgr on every node of a lab whose
// leases live in a real kube-apiserver (RBAC on) with podCIDRs from a real
// kube-controller-manager, authenticating as the ServiceAccount of
// deploy/kube-weft.yml with exactly its ClusterRole.

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	corev1 "k8s.io/api/core/v1"

	"github.com/weft-net/weft/internal/kubeapi"
	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/cluster"
	"github.com/weft-net/weft/internal/testenv"
)

// kubeBins returns the Kubernetes binaries: a missing build skips under
// -short and fails otherwise, naming make kube-bins.
func kubeBins(t *testing.T) kubeapi.Bins {
	t.Helper()
	b, err := kubeapi.Binaries("")
	if err == nil {
		return b
	}
	if testing.Short() {
		t.Skip("skipping: " + err.Error())
	}
	t.Fatalf("%v: run make kube-bins (or set WEFT_KUBE_BIN_DIR)", err)
	return kubeapi.Bins{}
}

// upKube starts a kube-mode cluster for the test; on failure the control
// plane's log tails are printed too.
func upKube(t *testing.T, o cluster.Options) *cluster.Cluster {
	t.Helper()
	needRoot(t)
	o.Store = cluster.StoreKube
	o.KubeBins = kubeBins(t)
	begin := time.Now()
	c := up(t, o)
	t.Logf("kube lab up in %v", time.Since(begin).Round(time.Millisecond))
	t.Cleanup(func() {
		if !t.Failed() || c.Kube() == nil {
			return
		}
		logs, _ := filepath.Glob(filepath.Join(c.Kube().Dir(), "*.log"))
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("== %s (tail)\n%s", l, b)
		}
	})
	return c
}

func tctx(t *testing.T) context.Context { return testenv.Context(t, time.Minute) }

func kubectl(t *testing.T, c *cluster.Cluster, stdin string, args ...string) string {
	t.Helper()
	out, err := c.Kubectl(tctx(t), strings.NewReader(stdin), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func getNode(t *testing.T, c *cluster.Cluster, name string) *corev1.Node {
	t.Helper()
	n, err := c.GetNode(tctx(t), name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// logCount counts the lines of node's weftd log that contain every one of
// subs.
func logCount(t *testing.T, c *cluster.Cluster, node int, subs ...string) int {
	t.Helper()
	b, err := os.ReadFile(c.LogFile(node))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		all := true
		for _, s := range subs {
			all = all && strings.Contains(line, s)
		}
		if all {
			n++
		}
	}
	return n
}

// hasRoute reports whether node has a route to subnet.
func hasRoute(t *testing.T, c *cluster.Cluster, node int, subnet netip.Prefix) bool {
	t.Helper()
	return strings.TrimSpace(run(t, c.NodeNS(node), "ip", "route", "show", subnet.String())) != ""
}

// pingPods pings every pod of nodes from every other pod of nodes.
func pingPods(t *testing.T, c *cluster.Cluster, nodes ...int) {
	t.Helper()
	var pods []cluster.Pod
	for _, p := range c.Pods() {
		for _, n := range nodes {
			if p.Node == n {
				pods = append(pods, p)
			}
		}
	}
	n := 0
	for _, from := range pods {
		for _, to := range pods {
			if from.NS == to.NS {
				continue
			}
			for _, a := range to.Addrs {
				n++
				if _, err := lab.Ping(context.Background(), from.NS, a); err != nil {
					t.Errorf("pod %s -> %s (%s): %v", from.NS, to.NS, a, err)
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no pings: no pods")
	}
}

// streamPing sends an ICMP echo request from namespace ns to dst every 10 ms
// (100 Hz from a ticker, which drops the ticks a loaded machine misses: the
// caller checks the rate it reached) until stop is called; stop waits a second for the last replies and returns how
// many requests were sent and how many distinct ones were answered.
func streamPing(t *testing.T, ns string, dst netip.Addr) (stop func() (sent, received int)) {
	t.Helper()
	var conn *icmp.PacketConn
	if err := lab.Do(ns, func() (err error) { conn, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0"); return err }); err != nil {
		t.Fatal(err)
	}
	id := os.Getpid()&0xffff ^ 0x5a5a
	var mu sync.Mutex
	got := map[int]bool{}
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		buf := make([]byte, 1500)
		for {
			n, peer, err := conn.ReadFrom(buf)
			if err != nil {
				return // closed
			}
			m, err := icmp.ParseMessage(1, buf[:n])
			if ip, ok := peer.(*net.IPAddr); err != nil || !ok || !ip.IP.Equal(dst.AsSlice()) || m.Type != ipv4.ICMPTypeEchoReply {
				continue
			}
			if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id {
				mu.Lock()
				got[e.Seq] = true
				mu.Unlock()
			}
		}
	}()
	quit, sendDone := make(chan struct{}), make(chan int)
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		seq := 0
		for {
			select {
			case <-quit:
				sendDone <- seq
				return
			case <-tick.C:
			}
			b, _ := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq & 0xffff, Data: []byte("weft-kube")}}).Marshal(nil)
			if _, err := conn.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err == nil {
				seq++
			}
		}
	}()
	return func() (int, int) {
		close(quit)
		sent := <-sendDone
		time.Sleep(time.Second)
		conn.Close()
		<-recvDone
		mu.Lock()
		defer mu.Unlock()
		return sent, len(got)
	}
}

// checkPublished checks node's Node as read back through the API: flannel's
// annotations, the NetworkUnavailable condition, and subnet.env's subnet in
// the podCIDR.
func checkPublished(t *testing.T, c *cluster.Cluster, node int, backend string) {
	t.Helper()
	n := getNode(t, c, cluster.NodeName(node))
	h, _ := c.Lab().Node(node)
	want := map[string]string{
		"kube-subnet-manager": "true",
		"backend-type":        backend,
		"public-ip":           h.Addrs()[0].String(),
	}
	switch backend {
	case "vxlan":
		want["backend-data"] = `{"VNI":1,"VtepMAC":"` + vtep(t, c, node) + `"}`
	case "host-gw":
		want["backend-data"] = "null"
	}
	for k, v := range want {
		if got, ok := n.Annotations[cluster.AnnotationPrefix+k]; !ok || got != v {
			t.Errorf("node %s: annotation %s = %q, want %q", n.Name, k, got, v)
		}
	}
	var cond *corev1.NodeCondition
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == corev1.NodeNetworkUnavailable {
			cond = &n.Status.Conditions[i]
		}
	}
	if cond == nil || cond.Status != corev1.ConditionFalse || cond.Reason != "FlannelIsUp" ||
		cond.Message != "Flannel is running on this node" {
		t.Errorf("node %s: NetworkUnavailable condition %+v, want False FlannelIsUp", n.Name, cond)
	}
	env, err := c.SubnetEnv(node)
	if err != nil {
		t.Fatal(err)
	}
	cidrs, err := c.PodCIDRs(tctx(t), node)
	if err != nil {
		t.Fatal(err)
	}
	for _, sub := range []netip.Prefix{env.Subnet, env.IPv6Subnet} {
		if !sub.IsValid() {
			continue
		}
		in := false
		for _, p := range cidrs {
			in = in || (p.Contains(sub.Addr()) && sub.Bits() >= p.Bits())
		}
		if !in {
			t.Errorf("node %s: subnet.env subnet %s not in its podCIDRs %v", n.Name, sub, cidrs)
		}
	}
	l, err := c.Lease(tctx(t), node)
	if err != nil {
		t.Fatal(err)
	}
	if l.Subnet != env.Subnet.Masked() {
		t.Errorf("node %s: lease subnet %s, subnet.env %s", n.Name, l.Subnet, env.Subnet)
	}
}

// TestKube runs one vxlan kube lab through the cases that share it: nodes 1
// to 3 start with two pods each, 4 and 5 are brought in by the subtests.
func TestKube(t *testing.T) {
	c := upKube(t, cluster.Options{Lab: lab.Options{Nodes: 5}, Idle: []int{4, 5}, Pods: 2})
	ok := t.Run("PingAndAnnotations", func(t *testing.T) {
		pingPods(t, c, 1, 2, 3)
		for n := 1; n <= 3; n++ {
			checkPublished(t, c, n, "vxlan")
		}
	})
	if !ok {
		t.FailNow()
	}
	t.Run("ManifestServerDryRun", func(t *testing.T) { testManifestDryRun(t, c) })
	t.Run("BadNodes", func(t *testing.T) { testBadNodes(t, c) })
	t.Run("ForbiddenVerb", func(t *testing.T) { testForbiddenVerb(t, c) })
	t.Run("NodeDeletedAndAdded", func(t *testing.T) { testDeleteAdd(t, c) })
	t.Run("APIServerOutage", func(t *testing.T) { testOutage(t, c) })
	t.Run("PodCIDRLater", func(t *testing.T) { testPodCIDRLater(t, c) })
}

// `kubectl apply --dry-run=server -f deploy/kube-weft.yml`: every object of
// the manifest passes the real API server's validation and admission.
func testManifestDryRun(t *testing.T, c *cluster.Cluster) {
	path, err := filepath.Abs(filepath.Join("..", "..", "deploy", "kube-weft.yml"))
	if err != nil {
		t.Fatal(err)
	}
	out := kubectl(t, c, "", "apply", "--dry-run=server", "-f", path)
	for _, obj := range []string{"namespace/kube-flannel", "clusterrole.rbac.authorization.k8s.io/flannel",
		"clusterrolebinding.rbac.authorization.k8s.io/flannel", "serviceaccount/flannel", "configmap/kube-flannel-cfg",
		"daemonset.apps/kube-flannel-ds"} {
		if !strings.Contains(out, obj) {
			t.Errorf("dry run does not name %s:\n%s", obj, out)
		}
	}
	t.Logf("%s", out)
}

// fakeNode is a Node with flannel's annotations but no weftd behind it.
func fakeNode(name, podCIDR string, ann map[string]string) string {
	full := map[string]string{}
	for k, v := range ann {
		full[cluster.AnnotationPrefix+k] = v
	}
	full[cluster.AnnotationPrefix+"kube-subnet-manager"] = "true"
	obj := map[string]any{"apiVersion": "v1", "kind": "Node", "metadata": map[string]any{"name": name, "annotations": full}}
	if podCIDR != "" {
		obj["spec"] = map[string]any{"podCIDR": podCIDR, "podCIDRs": []string{podCIDR}}
	}
	b, _ := json.Marshal(obj)
	return string(b)
}

// Nodes with malformed backend-data, a public-ip that is no address, a
// podCIDR outside the Network, another backend: every real node skips each,
// logs it once, and keeps working. Each fake Node gets its podCIDR at
// creation, so that what is wrong with it is the one thing the case is about
// (a Node the controller has not served yet is logged for that first).
//
// Every line names the Node: the store's (bad annotations or podCIDRs), and
// the daemon's for a Node of another backend, which is valid to the store.
func testBadNodes(t *testing.T, c *cluster.Cluster) {
	vx := func(ip string) map[string]string {
		return map[string]string{"backend-type": "vxlan", "public-ip": ip, "backend-data": `{"VNI":1,"VtepMAC":"02:00:00:00:00:0a"}`}
	}
	bad := map[string]string{ // name: the Node; logged as
		"fake-bad-data": fakeNode("fake-bad-data", "10.244.201.0/24", map[string]string{"backend-type": "vxlan",
			"public-ip": "192.168.100.201", "backend-data": `{"VNI":1,"VtepMAC":`}),
		"fake-bad-ip":  fakeNode("fake-bad-ip", "10.244.202.0/24", vx("not-an-address")),
		"fake-outside": fakeNode("fake-outside", "10.99.0.0/24", vx("192.168.100.203")),
		"fake-hostgw": fakeNode("fake-hostgw", "10.244.204.0/24", map[string]string{"backend-type": "host-gw",
			"public-ip": "192.168.100.204", "backend-data": "null"}),
	}
	logged := map[string][]string{
		"fake-bad-data": {"fake-bad-data", "is not JSON"},
		"fake-bad-ip":   {"fake-bad-ip", "not-an-address"},
		"fake-outside":  {"fake-outside", "10.99.0.0/24", "not inside network"},
		"fake-hostgw":   {"10.244.204.0-24", "192.168.100.204", "host-gw", "node=fake-hostgw"},
	}
	var names []string
	for name, obj := range bad {
		names = append(names, name)
		kubectl(t, c, obj, "create", "-f", "-")
	}
	t.Cleanup(func() {
		_, _ = c.Kubectl(context.Background(), nil, append([]string{"delete", "node", "--wait=false"}, names...)...)
	})
	// Touch each Node again: a second event must not log again.
	time.Sleep(time.Second)
	for _, name := range names {
		kubectl(t, c, "", "label", "node", name, "weft.test/touched=1")
	}
	time.Sleep(time.Second)
	for n := 1; n <= 3; n++ {
		for _, name := range names {
			if got := logCount(t, c, n, logged[name]...); got != 1 {
				t.Errorf("node %d logged %s (%q) %d times, want once", n, name, logged[name], got)
			}
			if got := logCount(t, c, n, name); got != 1 {
				t.Errorf("node %d has %d lines naming %s, want one", n, got, name)
			}
		}
		if ok, err := c.Ready(tctx(t), n); !ok {
			t.Errorf("node %d not ready after the bad Nodes: %v", n, err)
		}
	}
	pingPods(t, c, 1, 2, 3)
	if t.Failed() {
		b, _ := os.ReadFile(c.LogFile(1))
		t.Logf("n1 log:\n%s", b)
	}
}

// weftd whose ClusterRole lacks patch on nodes/status fails clearly: its
// log and /readyz name the forbidden verb and resource.
func testForbiddenVerb(t *testing.T, c *cluster.Cluster) {
	ctx := tctx(t)
	role := kubectl(t, c, "", "get", "clusterrole", "flannel", "-o", "json")
	var cr map[string]any
	if err := json.Unmarshal([]byte(role), &cr); err != nil {
		t.Fatal(err)
	}
	var rules []any
	for _, r := range cr["rules"].([]any) {
		if res := r.(map[string]any)["resources"].([]any); len(res) == 1 && res[0] == "nodes/status" {
			continue // the one verb taken away: patch on nodes/status
		}
		rules = append(rules, r)
	}
	if len(rules) != 2 {
		t.Fatalf("manifest ClusterRole rules: %s", role)
	}
	limited, _ := json.Marshal([]any{
		map[string]any{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": "flannel-nopatch", "namespace": cluster.KubeNamespace}},
		map[string]any{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": map[string]any{"name": "flannel-nopatch"}, "rules": rules},
		map[string]any{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": map[string]any{"name": "flannel-nopatch"},
			"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "flannel-nopatch"},
			"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": "flannel-nopatch", "namespace": cluster.KubeNamespace}}},
	})
	kubectl(t, c, `{"apiVersion":"v1","kind":"List","items":`+string(limited)+`}`, "apply", "-f", "-")
	kc, err := c.Kube().ServiceAccountKubeconfig(ctx, cluster.KubeNamespace, "flannel-nopatch", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RegisterNode(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitPodCIDR(ctx, 4); err != nil {
		t.Fatal(err)
	}
	c.SetKubeconfig(4, kc)
	if err := c.StartWeftd(4); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = c.KillWeftd(4, false)
		c.SetKubeconfig(4, "")
		if err := c.DeleteNode(context.Background(), 4); err != nil {
			t.Error(err)
		}
		_ = os.Remove(c.SubnetFile(4))
	}()
	var reason string
	testenv.WaitFor(t, 20*time.Second, "log naming the forbidden patch of nodes/status", func() bool {
		return logCount(t, c, 4, "forbidden", "patch", "nodes/status") > 0
	})
	testenv.WaitFor(t, 10*time.Second, "/readyz naming the forbidden verb", func() bool {
		ok, body, err := c.Readyz(ctx, 4)
		reason = body
		if ok {
			t.Fatalf("weftd without patch on nodes/status is ready: %s", body)
		}
		return err == nil && strings.Contains(body, "forbidden") && strings.Contains(body, "patch")
	})
	t.Logf("/readyz: %s", strings.TrimSpace(reason))
	if c.Pid(4) == 0 {
		t.Log("weftd exited")
	}
}

// A Node deleted: its routes are gone within 1 s on every other node. A
// node added later is reachable within 1 s of its weftd being ready.
func testDeleteAdd(t *testing.T, c *cluster.Cluster) {
	ctx := tctx(t)
	env3, err := c.SubnetEnv(3)
	if err != nil {
		t.Fatal(err)
	}
	sub3 := env3.Subnet.Masked()
	if err := c.KillWeftd(3, false); err != nil { // the node goes away; SIGTERM leaves its routes
		t.Fatal(err)
	}
	if err := c.DeleteNode(ctx, 3); err != nil {
		t.Fatal(err)
	}
	took := testenv.WaitFor(t, time.Second, "routes to deleted node n3 gone on n1 and n2", func() bool {
		return !hasRoute(t, c, 1, sub3) && !hasRoute(t, c, 2, sub3)
	})
	t.Logf("routes to deleted n3 (%s) gone on n1 and n2 %v after the delete", sub3, took.Round(time.Millisecond))

	if err := c.RegisterNode(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitPodCIDR(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if err := c.StartWeftd(4); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctx, 4); err != nil {
		t.Fatal(err)
	}
	ready := time.Now()
	pod, err := c.AddPod(ctx, 4, 1)
	if err != nil {
		t.Fatal(err)
	}
	p1 := c.Pods()[0]
	pctx, cancel := context.WithDeadline(ctx, ready.Add(time.Second))
	defer cancel()
	if _, err := lab.Ping(pctx, p1.NS, pod.Addrs[0]); err != nil {
		t.Fatalf("new node n4's pod not reachable from n1 within 1 s of ready: %v", err)
	}
	t.Logf("new node n4's pod reachable from n1 %v after its weftd was ready (pod attach included)",
		time.Since(ready).Round(time.Millisecond))
	checkPublished(t, c, 4, "vxlan")
	pingPods(t, c, 1, 2, 4)
}

// The API server stopped for 30 s under a 100 Hz pod ping: no ping lost.
// n4's Node is removed straight from etcd during the outage (its weftd
// stopped first): once the API server is back, the others remove its routes.
func testOutage(t *testing.T, c *cluster.Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp := c.Kube()
	env4, err := c.SubnetEnv(4)
	if err != nil {
		t.Fatal(err)
	}
	sub4 := env4.Subnet.Masked()
	if err := c.KillWeftd(4, false); err != nil {
		t.Fatal(err)
	}
	var from, to cluster.Pod
	for _, p := range c.Pods() {
		if p.Node == 1 && from.NS == "" {
			from = p
		}
		if p.Node == 2 && to.NS == "" {
			to = p
		}
	}
	begin := time.Now()
	stopPing := streamPing(t, from.NS, to.Addrs[0])
	time.Sleep(time.Second)
	stopped := time.Now()
	if err := cp.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	key := cp.EtcdPrefix() + "/minions/" + cluster.NodeName(4)
	cli, err := c.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Delete(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Deleted != 1 {
		t.Fatalf("etcd key %s: deleted %d keys, want 1", key, resp.Deleted)
	}
	time.Sleep(30*time.Second - time.Since(stopped))
	if err := cp.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	t.Logf("API server back %v after the stop began (it stops listening at once)", back.Sub(stopped).Round(time.Millisecond))
	took := testenv.WaitFor(t, 10*time.Second, "routes to n4, deleted during the outage, gone on n1 and n2", func() bool {
		return !hasRoute(t, c, 1, sub4) && !hasRoute(t, c, 2, sub4)
	})
	t.Logf("routes to n4 (deleted from etcd during the outage) gone %v after the API server was back", took.Round(time.Millisecond))
	time.Sleep(time.Second)
	sent, received := stopPing()
	elapsed := time.Since(begin) - time.Second
	if sent < int(elapsed/(20*time.Millisecond)) || received != sent {
		t.Errorf("ping across the outage: %d sent in %v, %d answered; want 100 Hz and no loss", sent, elapsed.Round(time.Millisecond), received)
	}
	t.Logf("ping across the outage: %d sent in %v (%.0f Hz), %d answered", sent, elapsed.Round(time.Millisecond),
		float64(sent)/elapsed.Seconds(), received)
	for n := 1; n <= 2; n++ {
		if ok, err := c.Ready(ctx, n); !ok {
			t.Errorf("node %d not ready after the outage: %v", n, err)
		}
	}
	pingPods(t, c, 1, 2)
}

// A Node without a podCIDR (the controller manager is stopped) given one by
// hand 5 s after its weftd started: weftd waits with /readyz 503 naming the
// reason and comes up without a restart.
func testPodCIDRLater(t *testing.T, c *cluster.Cluster) {
	ctx := tctx(t)
	var kcm int
	for _, p := range c.Kube().Processes() {
		if p.Name == "kube-controller-manager" {
			kcm = p.PID
		}
	}
	if kcm == 0 {
		t.Fatal("kube-controller-manager is not running")
	}
	if err := syscall.Kill(kcm, syscall.SIGKILL); err != nil { // a process the control plane started, by its pid
		t.Fatal(err)
	}
	testenv.WaitFor(t, 5*time.Second, "kube-controller-manager exits", func() bool { return len(c.Kube().Processes()) == 1 })
	if err := c.RegisterNode(ctx, 5); err != nil {
		t.Fatal(err)
	}
	if err := c.StartWeftd(5); err != nil {
		t.Fatal(err)
	}
	pid := c.Pid(5)
	var reason string
	testenv.WaitFor(t, 10*time.Second, "/readyz 503 naming the missing podCIDR", func() bool {
		ok, body, err := c.Readyz(ctx, 5)
		if ok {
			t.Fatalf("weftd ready without a podCIDR: %s", body)
		}
		reason = body
		return err == nil && strings.Contains(strings.ToLower(body), "podcidr")
	})
	t.Logf("/readyz before the podCIDR: %s", strings.TrimSpace(reason))
	time.Sleep(5 * time.Second)
	if ok, _ := c.Ready(ctx, 5); ok {
		t.Fatal("weftd ready without a podCIDR")
	}
	const cidr = "10.244.250.0/24"
	assigned := time.Now()
	kubectl(t, c, "", "patch", "node", cluster.NodeName(5), "--type=merge", "-p",
		`{"spec":{"podCIDR":"`+cidr+`","podCIDRs":["`+cidr+`"]}}`)
	if err := c.WaitReady(ctx, 5); err != nil {
		t.Fatal(err)
	}
	t.Logf("ready %v after the podCIDR was assigned", time.Since(assigned).Round(time.Millisecond))
	if got := c.Pid(5); got != pid {
		t.Errorf("weftd pid %d, was %d: restarted", got, pid)
	}
	env, err := c.SubnetEnv(5)
	if err != nil {
		t.Fatal(err)
	}
	if env.Subnet.Masked().String() != cidr {
		t.Errorf("subnet.env subnet %s, want the podCIDR %s", env.Subnet, cidr)
	}
	if _, err := c.AddPod(ctx, 5, 1); err != nil {
		t.Fatal(err)
	}
	pingPods(t, c, 1, 2, 5)
}

// host-gw in kube mode: every pod pings every other, flannel's annotations.
func TestKubeHostGW(t *testing.T) {
	c := upKube(t, cluster.Options{Lab: lab.Options{Nodes: 3}, Backend: "host-gw", Pods: 2})
	assertMatrix(t, c)
	for n := 1; n <= 3; n++ {
		checkPublished(t, c, n, "host-gw")
	}
	if r := routeTo(t, c, 1, 2); !strings.Contains(r, "via 192.168.100.12 dev eth0") {
		t.Errorf("host-gw route %q", r)
	}
}

// Dual-stack podCIDRs with vxlan: the controller manager allocates an IPv4
// and an IPv6 podCIDR per node, and pods ping over both families.
func TestKubeDualStack(t *testing.T) {
	conf := `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`
	c := upKube(t, cluster.Options{Lab: lab.Options{Nodes: 2, IPv6: true}, NetConf: conf, Pods: 1})
	for n := 1; n <= 2; n++ {
		cidrs, err := c.PodCIDRs(tctx(t), n)
		if err != nil || len(cidrs) != 2 {
			t.Fatalf("node %d podCIDRs %v (%v), want an IPv4 and an IPv6 one", n, cidrs, err)
		}
		l, err := c.Lease(tctx(t), n)
		if err != nil {
			t.Fatal(err)
		}
		if !l.IPv6Subnet.IsValid() || !l.Attrs.PublicIPv6.IsValid() || len(l.Attrs.BackendV6Data) == 0 {
			t.Errorf("node %d: IPv6 half of the lease missing: %+v", n, l)
		}
	}
	if n := podsWithIPv6(c); n != 2 {
		t.Fatalf("%d pods have an IPv6 address, want 2: %+v", n, c.Pods())
	}
	assertMatrix(t, c)
}

// A Network that contains the node's own address: weftd warns at start,
// naming the network and the address.
func TestKubeNetworkContainsNode(t *testing.T) {
	conf := `{"Network":"192.168.0.0/16","Backend":{"Type":"vxlan"}}`
	c := upKube(t, cluster.Options{Lab: lab.Options{Nodes: 1}, NetConf: conf})
	if got := logCount(t, c, 1, "cluster network contains this node's own address", "192.168.0.0/16", "192.168.100.11"); got != 1 {
		b, _ := os.ReadFile(c.LogFile(1))
		t.Errorf("want one warning naming 192.168.0.0/16 and 192.168.100.11, got %d:\n%s", got, b)
	}
}
