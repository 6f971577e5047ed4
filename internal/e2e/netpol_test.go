//go:build linux

package e2e

// NetworkPolicy end to end: weftd --kube-subnet-mgr --network-policy on two
// nodes with a real kube-apiserver (RBAC of deploy/kube-weft-netpol.yml).
// weftd runs with --ip-masq as kube-weft.yml has it: without, the CNI bridge
// plugin masquerades pod traffic to other nodes and their policies see the
// node's address, not the pod's (weftd says so in its Node condition).
// The lab's pods (network namespaces on the nodes' bridges, addresses from
// the CNI plugin) are registered as Pod objects with those addresses, as a
// kubelet would report them; policies are created with kubectl.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/deploy"
	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/cluster"
	"github.com/weft-net/weft/internal/testenv"
)

// registerPods creates a Pod object per lab pod in namespace ns, labelled
// pod=n<node>p<index>, bound to its node, Running with the lab pod's
// addresses, and a container port named "http" on port.
func registerPods(t *testing.T, c *cluster.Cluster, ns string, port int) {
	t.Helper()
	kubectl(t, c, "", "create", "namespace", ns)
	for _, p := range c.Pods() {
		name := fmt.Sprintf("n%dp%d", p.Node, p.Index)
		kubectl(t, c, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s, labels: {pod: %s, node: %s}}
spec:
  nodeName: %s
  containers: [{name: c, image: weft.local/none, ports: [{name: http, containerPort: %d, protocol: TCP}]}]
`, name, ns, name, cluster.NodeName(p.Node), cluster.NodeName(p.Node), port), "apply", "-f", "-")
		var ips []string
		for _, a := range p.Addrs {
			ips = append(ips, fmt.Sprintf(`{"ip":%q}`, a))
		}
		kubectl(t, c, "", "-n", ns, "patch", "pod", name, "--subresource=status", "--type=merge", "-p",
			fmt.Sprintf(`{"status":{"phase":"Running","podIP":%q,"podIPs":[%s]}}`, p.Addrs[0], strings.Join(ips, ",")))
	}
}

// connects reports whether a TCP connection from pod from to to:port
// opens within d.
func connects(t *testing.T, from cluster.Pod, to netip.Addr, port int, d time.Duration) bool {
	t.Helper()
	var ok bool
	if err := lab.Do(from.NS, func() error {
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(to.String(), fmt.Sprint(port)), d)
		if err == nil {
			ok = true
			return conn.Close()
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return ok
}

// echoIn serves TCP echo on port in pod ns until the test ends.
func echoIn(t *testing.T, ns string, port int) {
	t.Helper()
	var ln net.Listener
	if err := lab.Do(ns, func() (err error) {
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
			go func() { _, _ = io.Copy(conn, conn); _ = conn.Close() }()
		}
	}()
}

// matrix returns "from->to" for every pair of pods that connects.
func matrix(t *testing.T, pods []cluster.Pod, port int) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, from := range pods {
		for _, to := range pods {
			if from.NS == to.NS {
				continue
			}
			for _, a := range to.Addrs {
				if connects(t, from, a, port, testenv.Scale(t, 500*time.Millisecond)) {
					out[fmt.Sprintf("n%dp%d->n%dp%d/%s", from.Node, from.Index, to.Node, to.Index, family(a))] = true
				}
			}
		}
	}
	return out
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "v4"
	}
	return "v6"
}

// wantMatrix checks the connections: every pair connects but those denied
// lists ("n1p1->n2p1" denies both families).
func wantMatrix(t *testing.T, pods []cluster.Pod, port int, denied ...string) {
	t.Helper()
	got := matrix(t, pods, port)
	for _, from := range pods {
		for _, to := range pods {
			if from.NS == to.NS {
				continue
			}
			pair := fmt.Sprintf("n%dp%d->n%dp%d", from.Node, from.Index, to.Node, to.Index)
			for _, a := range to.Addrs {
				key := pair + "/" + family(a)
				want := !slices.Contains(denied, pair)
				if got[key] != want {
					t.Errorf("%s: connects %v, want %v", key, got[key], want)
				}
			}
		}
	}
}

func applyPolicy(t *testing.T, c *cluster.Cluster, ns, yaml string) {
	t.Helper()
	kubectl(t, c, "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"+strings.ReplaceAll(yaml, "NS", ns), "apply", "-f", "-")
}

func TestKubeNetworkPolicy(t *testing.T) {
	c := upKube(t, cluster.Options{Lab: lab.Options{Nodes: 2}, Pods: 2,
		WeftdArgs: []string{"--network-policy", "--ip-masq"}, Manifest: deploy.NetpolManifest})
	const ns, port = "np", 8080
	t.Cleanup(func() {
		if t.Failed() {
			for n := 1; n <= 2; n++ {
				out, _ := lab.Exec(context.Background(), c.NodeNS(n), "nft", "list", "table", "inet", "weft-netpol")
				t.Logf("== node n%d: nft list table inet weft-netpol\n%s", n, out)
			}
		}
	})
	registerPods(t, c, ns, port)
	pods := c.Pods()
	for _, p := range pods {
		echoIn(t, p.NS, port)
	}
	wantMatrix(t, pods, port)

	// Deny all ingress of n1p1: from its node and the other.
	applyPolicy(t, c, ns, `metadata: {name: deny, namespace: NS}
spec: {podSelector: {matchLabels: {pod: n1p1}}, policyTypes: [Ingress]}
`)
	took := testenv.WaitFor(t, testenv.Scale(t, 5*time.Second), "n2p1 denied to n1p1", func() bool {
		return !connects(t, pods[2], pods[0].Addrs[0], port, 200*time.Millisecond)
	})
	t.Logf("deny-all enforced on n1 %v after kubectl apply returned", took.Round(time.Millisecond))
	wantMatrix(t, pods, port, "n1p2->n1p1", "n2p1->n1p1", "n2p2->n1p1")

	// Allow n1p1's named port http from pods of node n2.
	applyPolicy(t, c, ns, `metadata: {name: allow-n2, namespace: NS}
spec:
  podSelector: {matchLabels: {pod: n1p1}}
  ingress: [{from: [{podSelector: {matchLabels: {node: n2}}}], ports: [{port: http}]}]
`)
	testenv.WaitFor(t, testenv.Scale(t, 5*time.Second), "n2p1 allowed to n1p1", func() bool {
		return connects(t, pods[2], pods[0].Addrs[0], port, 200*time.Millisecond)
	})
	wantMatrix(t, pods, port, "n1p2->n1p1")

	// n2p2 may only reach n1p1's addresses (ipBlock).
	var blocks []string
	for _, a := range pods[0].Addrs {
		blocks = append(blocks, fmt.Sprintf("{ipBlock: {cidr: %s}}", netip.PrefixFrom(a, a.BitLen())))
	}
	applyPolicy(t, c, ns, `metadata: {name: egress, namespace: NS}
spec:
  podSelector: {matchLabels: {pod: n2p2}}
  policyTypes: [Egress]
  egress: [{to: [`+strings.Join(blocks, ", ")+`]}]
`)
	testenv.WaitFor(t, testenv.Scale(t, 5*time.Second), "n2p2 denied to n1p2", func() bool {
		return !connects(t, pods[3], pods[1].Addrs[0], port, 200*time.Millisecond)
	})
	wantMatrix(t, pods, port, "n1p2->n1p1", "n2p2->n1p2", "n2p2->n2p1")

	for n := 1; n <= 2; n++ {
		cond := nodeCondition(t, c, cluster.NodeName(n), "WeftNetworkPolicy")
		if !strings.HasPrefix(cond, "True Enforcing") {
			t.Errorf("node n%d: condition WeftNetworkPolicy is %q", n, cond)
		}
	}
	// weft status shows it, from the kernel's table and the condition.
	cmd := lab.Command(context.Background(), c.NodeNS(1), filepath.Join(bins.get(t), "weft"), "status")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "policy   enforcing: 2 ingress and 0 egress policies for 1 pod addresses") {
		t.Errorf("weft status on n1: %v\n%s", err, out)
	}

	// An established connection a new policy denies is cut.
	conn := dialIn(t, pods[2], pods[1].Addrs[0], port)
	echo(t, conn, true)
	applyPolicy(t, c, ns, `metadata: {name: deny-n1p2, namespace: NS}
spec: {podSelector: {matchLabels: {pod: n1p2}}, policyTypes: [Ingress]}
`)
	testenv.WaitFor(t, testenv.Scale(t, 5*time.Second), "the established connection to n1p2 cut", func() bool {
		return !echoOnce(conn)
	})

	kubectl(t, c, "", "-n", ns, "delete", "networkpolicy", "--all")
	testenv.WaitFor(t, testenv.Scale(t, 5*time.Second), "n1p2 reachable again", func() bool {
		return connects(t, pods[3], pods[1].Addrs[0], port, 200*time.Millisecond)
	})
	wantMatrix(t, pods, port)
}

// nodeCondition returns "<status> <reason>: <message>" of node's condition
// typ, or "" when it has none.
func nodeCondition(t *testing.T, c *cluster.Cluster, node, typ string) string {
	t.Helper()
	for _, cond := range getNode(t, c, node).Status.Conditions {
		if string(cond.Type) == typ {
			return fmt.Sprintf("%s %s: %s", cond.Status, cond.Reason, cond.Message)
		}
	}
	return ""
}

// dialIn opens a TCP connection from pod from, which the test closes at its
// end.
func dialIn(t *testing.T, from cluster.Pod, to netip.Addr, port int) net.Conn {
	t.Helper()
	var conn net.Conn
	if err := lab.Do(from.NS, func() (err error) {
		conn, err = net.DialTimeout("tcp", net.JoinHostPort(to.String(), fmt.Sprint(port)), testenv.Scale(t, 2*time.Second))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// echoOnce sends a line on an echo connection and reports whether it came
// back within 300 ms.
func echoOnce(conn net.Conn) bool {
	_ = conn.SetDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := conn.Write([]byte("x")); err != nil {
		return false
	}
	b := make([]byte, 1)
	_, err := io.ReadFull(conn, b)
	return err == nil
}

func echo(t *testing.T, conn net.Conn, want bool) {
	t.Helper()
	if got := echoOnce(conn); got != want {
		t.Fatalf("echo on %v: %v, want %v", conn.RemoteAddr(), got, want)
	}
}

// TestKubeNetworkPolicyNoRights: weftd --network-policy under the RBAC of
// kube-weft.yml (no rights on pods' lists, namespaces or networkpolicies)
// cannot enforce, and says so in the Node's condition, naming the API
// server's refusal, instead of quietly policing nothing.
func TestKubeNetworkPolicyNoRights(t *testing.T) {
	c := upKube(t, cluster.Options{Lab: lab.Options{Nodes: 1}, WeftdArgs: []string{"--network-policy", "--ip-masq"}})
	var cond string
	took := testenv.WaitFor(t, testenv.Scale(t, 90*time.Second), "condition WeftNetworkPolicy False", func() bool {
		cond = nodeCondition(t, c, cluster.NodeName(1), "WeftNetworkPolicy")
		return cond != ""
	})
	t.Logf("after %v: %s", took.Round(time.Second), cond)
	if !strings.HasPrefix(cond, "False RulesNotInKernel: ") || !strings.Contains(cond, "forbidden") {
		t.Errorf("condition %q: want False RulesNotInKernel naming the API server's refusal", cond)
	}
	if logCount(t, c, 1, "network policy NOT enforced", "forbidden") == 0 {
		t.Error("weftd's log does not say that policy is not enforced, and why")
	}
}
