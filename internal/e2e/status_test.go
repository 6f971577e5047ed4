//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/daemon"
	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/cluster"
)

// weft status on a lab node, run as an operator would, with the running
// weftd's flags: 0 on a healthy node; with weftd stopped (SIGSTOP), a peer's
// route deleted and the masquerade chain flushed by hand, 1, naming the
// route's subnet and the chain; after SIGCONT weftd repairs both and it is 0
// again; with etcd unreachable from the node, 2.
func TestStatus(t *testing.T) {
	c := up(t, cluster.Options{Lab: lab.Options{Nodes: 3}, Pods: 1, WeftdArgs: []string{"--ip-masq"}})
	weft := filepath.Join(bins.get(t), "weft")
	ctx := context.Background()
	status := func(extra ...string) (int, string) {
		t.Helper()
		code, out, err := c.Status(ctx, 1, weft, extra...)
		if err != nil {
			t.Fatal(err)
		}
		return code, out
	}
	if code, out := status(); code != 0 || !strings.Contains(out, "kernel   in sync with the store") ||
		!strings.Contains(out, "weftd    ready: 2 peers programmed") {
		t.Fatalf("healthy node: exit %d\n%s", code, out)
	}
	peer, _ := c.SubnetEnv(2)
	subnet := peer.Subnet.Masked().String()
	pid := c.Pid(1)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}()
	run(t, c.NodeNS(1), "ip", "route", "del", subnet)
	run(t, c.NodeNS(1), "iptables", "-t", "nat", "-F", "FLANNEL-POSTRTG")
	code, out := status()
	if code != 1 || !strings.Contains(out, "missing or different route "+subnet+" via "+peer.Subnet.Masked().Addr().String()+" dev flannel.1 onlink") ||
		!strings.Contains(out, "iptables-nft -t nat chain FLANNEL-POSTRTG: missing or different rules") ||
		!strings.Contains(out, "weftd    not answering") {
		t.Fatalf("weftd stopped, route deleted, chain flushed: exit %d, want 1 naming both\n%s", code, out)
	}
	t.Logf("weft status with weftd stopped:\n%s", out)
	code, out = status("--json")
	var rep daemon.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 1 || rep.InSync || len(rep.Problems) != 2 || rep.Node.Backend != "vxlan" {
		t.Errorf("--json: exit %d, %v, %+v\n%s", code, err, rep, out)
	}
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	// The route comes back at once (its deletion notice is queued); the
	// chain with the rules' resync (--iptables-resync, 5 s).
	deadline := time.Now().Add(15 * time.Second)
	for {
		if code, out = status(); code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after SIGCONT: exit %d, want 0 once weftd repaired\n%s", code, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	etcdHost, _, err := net.SplitHostPort(strings.TrimPrefix(c.Endpoint(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	block := []string{"OUTPUT", "-d", etcdHost, "-p", "tcp", "--dport", "2379", "-j", "REJECT", "--reject-with", "tcp-reset"}
	run(t, c.NodeNS(1), append([]string{"iptables", "-I"}, block...)...)
	defer run(t, c.NodeNS(1), append([]string{"iptables", "-D"}, block...)...)
	if code, out = status(); code != 2 {
		t.Errorf("etcd unreachable: exit %d, want 2\n%s", code, out)
	}
}
