package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/testenv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/backend/hostgw"
	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/daemon"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/netlinkx"

	"github.com/weft-net/weft/internal/netlinkx/netlinkxtest"
)

// weftd's Run on the kube store (the fake API) in a namespace of its own:
// while the Node has no podCIDR, /readyz answers 503 saying so; the moment
// the controller assigns one the node comes up (no restart), publishes
// flannel's annotations, programs a peer, and sets NetworkUnavailable=False.
// Needs root (a network namespace).
func TestDaemonWaitsForPodCIDR(t *testing.T) {
	testenv.Privileged(t, "creates a network namespace")
	nsName, nl := testNamespace(t)
	api := newFake(kubeNode("n1", nil, nil), kubeNode("n2", []string{"10.244.2.0/24"}, map[string]string{
		"kube-subnet-manager": "true", "backend-type": "host-gw", "backend-data": "null", "public-ip": "192.168.77.2"}))
	var logs testenv.LogBuffer
	nc := mustNetConf(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`)
	s := newTestStore(t, api, nc, logs.Logger(), func(o *Options) { o.NotYetWait = 30 * time.Second })
	port := freePort(t)
	o := kubeOptions(t)
	o.HealthzIP, o.HealthzPort = mustAddr("127.0.0.1"), port
	up := make(chan error, 1)
	runDaemon(t, s, nl, o, &logs, func(ctx context.Context) { up <- s.MarkUp(ctx) })
	readyz := func() (int, string) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", port))
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	testenv.WaitFor(t, 20*time.Second, "readyz to give the reason", func() bool {
		code, body := readyz()
		return code == http.StatusServiceUnavailable && strings.Contains(body, "node n1 has no podCIDR yet")
	})
	n := api.node(t, "n1")
	n.Spec.PodCIDR, n.Spec.PodCIDRs = "10.244.1.0/24", []string{"10.244.1.0/24"}
	api.put(t, n)
	assigned := time.Now()
	testenv.WaitFor(t, 20*time.Second, "readyz 200", func() bool { code, _ := readyz(); return code == http.StatusOK })
	t.Logf("up %v after the podCIDR was assigned", time.Since(assigned).Round(time.Millisecond))
	if err := <-up; err != nil {
		t.Fatal(err)
	}
	n = api.node(t, "n1")
	if n.Annotations[DefaultPrefix+"/backend-type"] != "host-gw" || n.Annotations[DefaultPrefix+"/public-ip"] != "192.168.77.1" {
		t.Errorf("annotations %v", n.Annotations)
	}
	if c := n.Status.Conditions; len(c) != 1 || c[0].Type != corev1.NodeNetworkUnavailable || c[0].Status != corev1.ConditionFalse {
		t.Errorf("conditions %+v", c)
	}
	env, _ := os.ReadFile(o.SubnetFile)
	if !strings.Contains(string(env), "FLANNEL_SUBNET=10.244.1.1/24") {
		t.Errorf("subnet.env:\n%s", env)
	}
	testenv.WaitFor(t, 20*time.Second, "the peer's route", func() bool {
		out, _ := exec.Command("ip", "-n", nsName, "route", "show", "10.244.2.0/24").CombinedOutput()
		return strings.Contains(string(out), "via 192.168.77.2")
	})
}

// weftd's start on the kube store, its list streamed in parts (600 peers,
// three parts) over a kernel a previous run left: a stale route (a Node
// deleted while weftd was down) is removed, a wrong one rewritten, and every
// peer's route is in place when the node is up. The first list breaks off
// after 400 Nodes (the first part programmed), and one Node of that part is
// deleted before the store lists again: its route goes too. Needs root.
func TestDaemonStreamedStart(t *testing.T) {
	testenv.Privileged(t, "creates a network namespace")
	nsName, nl := testNamespace(t)
	const peers = 600
	objs := []runtime.Object{kubeNode("n1", []string{"10.0.1.0/24"}, nil)}
	for i := 2; i < peers+2; i++ {
		objs = append(objs, kubeNode(fmt.Sprintf("n%d", i), []string{fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)},
			map[string]string{"kube-subnet-manager": "true", "backend-type": "host-gw", "backend-data": "null",
				"public-ip": fmt.Sprintf("192.168.77.%d", 2+i%250)}))
	}
	for _, r := range [][]string{
		{"10.99.0.0/24", "via", "192.168.77.99"}, // stale: no Node holds it
		{"10.0.2.0/24", "via", "192.168.77.200"}, // n2's, with the wrong gateway
	} {
		if out, err := exec.Command("ip", append([]string{"-n", nsName, "route", "add"}, r...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip route add %v: %v\n%s", r, err, out)
		}
	}
	var logs testenv.LogBuffer
	nc := mustNetConf(t, `{"Network":"10.0.0.0/8","Backend":{"Type":"host-gw"}}`)
	api := &cutList{fakeAPI: newFake(objs...), t: t, after: 400}
	s := newTestStore(t, api, nc, logs.Logger())
	up := make(chan struct{})
	done := runDaemon(t, s, nl, kubeOptions(t), &logs, func(context.Context) { close(up) })
	select {
	case <-up:
	case err := <-done:
		t.Fatalf("daemon stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("not up after 30 s")
	}
	out, err := exec.Command("ip", "-n", nsName, "route", "show", "proto", "all").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	routes := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[1] == "via" {
			routes[f[0]] = f[2]
		}
	}
	for i := 2; i < peers+2; i++ {
		dst, gw := fmt.Sprintf("10.%d.%d.0/24", i/256, i%256), fmt.Sprintf("192.168.77.%d", 2+i%250)
		if fmt.Sprintf("n%d", i) == api.victim {
			gw = ""
		}
		if routes[dst] != gw {
			t.Fatalf("route %s via %q, want %q (node %s deleted between the two lists)", dst, routes[dst], gw, api.victim)
		}
	}
	if n := logs.Count("list nodes failed; retrying"); n != 1 {
		t.Errorf("%d list retries logged, want 1", n)
	}
	if gw, ok := routes["10.99.0.0/24"]; ok {
		t.Errorf("the stale route is still there (via %s):\n%s", gw, out)
	}
	if n := logs.Count("programmed peers", fmt.Sprintf("peers=%d", peers-1), "removed-stale=2"); n != 1 {
		t.Errorf("want one summary with %d peers and 2 stale routes removed", peers-1)
	}
}

// cutList is the fake API whose first list of Nodes breaks off after the
// first after Nodes; before it fails, one of them (victim) is deleted.
type cutList struct {
	*fakeAPI
	t      *testing.T
	after  int
	cut    bool
	victim string
}

func (c *cutList) ListNodes(ctx context.Context, opts metav1.ListOptions, each func(*corev1.Node)) (metav1.ListMeta, error) {
	if c.cut {
		return c.fakeAPI.ListNodes(ctx, opts, each)
	}
	c.cut = true
	var sent []string
	if _, err := c.fakeAPI.ListNodes(ctx, opts, func(n *corev1.Node) {
		if len(sent) < c.after {
			sent = append(sent, n.Name)
			each(n)
		}
	}); err != nil {
		return metav1.ListMeta{}, err
	}
	for _, name := range sent[10:] { // a Node of the first part of 256 leases
		if name != "n1" {
			c.victim = name
			break
		}
	}
	c.fakeAPI.del(c.t, c.victim)
	return metav1.ListMeta{}, errors.New("connection reset by peer (the test's)")
}

// kubeOptions are weftd's options for node n1 in kube mode, without
// forward rules (no netfilter in these tests).
func kubeOptions(t *testing.T) config.Options {
	o := config.Defaults()
	o.KubeSubnetMgr, o.NodeName, o.SubnetFile = true, "n1", filepath.Join(t.TempDir(), "subnet.env")
	o.IPTablesForwardRules = false
	return o
}

// runDaemon runs weftd's Run with host-gw on s in nl's namespace until the
// test ends, calling up (in a goroutine of its own) once the node is up, and
// returns the channel of Run's result. The log is printed if the test
// fails; an error of Run's fails it.
func runDaemon(t *testing.T, s *Store, nl *netlinkx.Handle, o config.Options, logs *testenv.LogBuffer, up func(context.Context)) <-chan error {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	result := make(chan error, 1)
	go func() {
		err := daemon.Run(ctx, o, daemon.Deps{Logger: logs.Logger(), Store: s, Kernel: nl,
			Backends: backend.Registry{hostgw.Type()},
			Ready:    func(lease.Lease) { go up(ctx) }})
		done <- err
		result <- err
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	return result
}

// testNamespace makes a namespace with eth0 at 192.168.77.1/24 and a default
// route, and returns its name and a netlink handle in it.
func testNamespace(t *testing.T) (string, *netlinkx.Handle) {
	name := testenv.NodeNamespace(t, "wk-", netip.MustParsePrefix("192.168.77.1/24"), netip.MustParseAddr("192.168.77.254"))
	nl, _ := netlinkxtest.In(t, name)
	return name, nl
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
