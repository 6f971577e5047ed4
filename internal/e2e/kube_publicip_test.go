//go:build linux

package e2e

// flannel's node-public-ip annotation end to end: weftd --kube-subnet-mgr on
// a real kube-apiserver, a Node annotated as k3s annotates it.

import (
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/cluster"

	"github.com/weft-net/weft/internal/testenv"
)

// TestKubeNodePublicIP: nodes 1 and 2 run as usual; nodes 3 and 4 are
// registered by the subtests, each with a second address on eth0 and
// node-public-ip set on its Node before its weftd starts. (The lab's weftd
// runs with --iface eth0, so the annotation stands in for --public-ip on
// that interface; the interface choice without --iface is tested in
// internal/daemon and internal/store/kube.)
func TestKubeNodePublicIP(t *testing.T) {
	c := upKube(t, cluster.Options{Lab: lab.Options{Nodes: 4}, Idle: []int{3, 4}, Pods: 1})
	if !t.Run("Annotated", func(t *testing.T) { testNodePublicIP(t, c) }) {
		t.FailNow()
	}
	t.Run("MalformedThenFixed", func(t *testing.T) { testNodePublicIPMalformed(t, c) })
}

// registerWithSecondAddr registers node's Node, waits for its podCIDR, gives
// its eth0 the second address addr/24 and sets node-public-ip to value.
func registerWithSecondAddr(t *testing.T, c *cluster.Cluster, node int, addr, value string) {
	t.Helper()
	ctx := tctx(t)
	if err := c.RegisterNode(ctx, node); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitPodCIDR(ctx, node); err != nil {
		t.Fatal(err)
	}
	run(t, c.NodeNS(node), "ip", "addr", "add", addr+"/24", "dev", lab.NodeIface)
	kubectl(t, c, "", "annotate", "node", cluster.NodeName(node), cluster.AnnotationPrefix+"node-public-ip="+value)
}

// checkUsesAddr checks that node publishes addr and that the data plane
// uses it: flannel.1's local address on node, and node 1's FDB entry for
// node's VTEP MAC (where node 1 sends node's pods' packets).
func checkUsesAddr(t *testing.T, c *cluster.Cluster, node int, addr string) {
	t.Helper()
	n := getNode(t, c, cluster.NodeName(node))
	if got := n.Annotations[cluster.AnnotationPrefix+"public-ip"]; got != addr {
		t.Errorf("node %d publishes public-ip %q, want %s", node, got, addr)
	}
	l, err := c.Lease(tctx(t), node)
	if err != nil {
		t.Fatal(err)
	}
	if l.Attrs.PublicIP.String() != addr {
		t.Errorf("node %d's lease has PublicIP %s, want %s", node, l.Attrs.PublicIP, addr)
	}
	if dev := run(t, c.NodeNS(node), "ip", "-d", "link", "show", "flannel.1"); !strings.Contains(dev, "local "+addr+" ") {
		t.Errorf("node %d's flannel.1 is not local %s:\n%s", node, addr, dev)
	}
	mac := vtep(t, c, node)
	testenv.WaitFor(t, 5*time.Second, "node 1's FDB entry for node's VTEP", func() bool {
		return strings.Contains(run(t, c.NodeNS(1), "bridge", "fdb", "show", "dev", "flannel.1"), mac+" dst "+addr+" ")
	})
	if got := logCount(t, c, node, `msg="external interface"`, "public-ip="+addr, "public-ip-from=node-public-ip"); got != 1 {
		t.Errorf("node %d logged %d external interface lines with the annotation's address, want 1", node, got)
	}
}

// node-public-ip set before weftd starts: the node publishes that address
// (not eth0's first), its VTEP sends from it, the other nodes send to it,
// and pods on every node ping each other.
func testNodePublicIP(t *testing.T, c *cluster.Cluster) {
	const addr = "192.168.100.113"
	registerWithSecondAddr(t, c, 3, addr, addr)
	if err := c.StartWeftd(3); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(tctx(t), 3); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddPod(tctx(t), 3, 1); err != nil {
		t.Fatal(err)
	}
	checkUsesAddr(t, c, 3, addr)
	pingPods(t, c, 1, 2, 3)
}

// A malformed node-public-ip: weftd stays not ready, /readyz and its log
// name the annotation and the value; once an operator corrects it, the node
// comes up without a restart with that address, and its pods ping.
func testNodePublicIPMalformed(t *testing.T, c *cluster.Cluster) {
	const addr, bad = "192.168.100.114", "192.168.100.1144"
	registerWithSecondAddr(t, c, 4, addr, bad)
	if err := c.StartWeftd(4); err != nil {
		t.Fatal(err)
	}
	pid := c.Pid(4)
	ctx := tctx(t)
	var reason string
	testenv.WaitFor(t, 20*time.Second, "/readyz 503 naming the malformed annotation", func() bool {
		ok, body, err := c.Readyz(ctx, 4)
		if ok {
			t.Fatalf("weftd ready with a malformed node-public-ip: %s", body)
		}
		reason = body
		return err == nil && strings.Contains(body, cluster.AnnotationPrefix+`node-public-ip "`+bad+`" is not an IP address`)
	})
	t.Logf("/readyz: %s", strings.TrimSpace(reason))
	if got := logCount(t, c, 4, "read the public address given for this node", bad); got != 1 {
		t.Errorf("the malformed value logged %d times, want once", got)
	}
	fixed := time.Now()
	kubectl(t, c, "", "annotate", "node", cluster.NodeName(4), "--overwrite", cluster.AnnotationPrefix+"node-public-ip="+addr)
	if err := c.WaitReady(ctx, 4); err != nil {
		t.Fatal(err)
	}
	t.Logf("ready %v after the annotation was corrected", time.Since(fixed).Round(time.Millisecond))
	if got := c.Pid(4); got != pid {
		t.Errorf("weftd pid %d, was %d: restarted", got, pid)
	}
	if _, err := c.AddPod(ctx, 4, 1); err != nil {
		t.Fatal(err)
	}
	checkUsesAddr(t, c, 4, addr)
	pingPods(t, c, 1, 2, 3, 4)
}
