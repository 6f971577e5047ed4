//go:build linux

package kubelet

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// flannelMaxLost bounds the packets a 100 Hz ping between test pods may lose
// while flannel's DaemonSet is replaced by weft's, node by node: weftd takes
// over flannel.1 (its MAC, so the peers' FDB entries and neighbours stay
// right), flannel's routes and its masquerade rules as they are, so nothing
// in the data path changes and this is 0.
const flannelMaxLost = 0

// TestKubeletUpgradeFromFlannel: a 3-node lab on flannel v0.28.9's own
// kube-flannel.yml (flanneld, flannel's CNI plugin and its iptables rules,
// hack/flannel-image.sh), then deploy/kube-weft.yml applied over it with
// kubectl, as an operator upgrades: the DaemonSet kube-flannel-ds rolls
// from flanneld to weftd node by node while test pods on all three nodes
// ping each other at 100 Hz.
//
// It checks flannel's shape first (its pods and image, flannel.1, its
// annotations, every pod reaching every other), then that the rollout
// completes with no ping lost, that no Node's podCIDR or flannel annotation
// and no node's subnet.env changed, that flannel.1 kept its MAC on every
// node, that flannel's --ip-masq rules (nat and filter) are neither lost nor
// doubled, and
// that weft's CNI plugin works on pods that flannel's plugin made: a test
// pod deleted (its DEL through weft's plugin frees its address), its
// replacement (ADD through weft's) reaching every other pod.
func TestKubeletUpgradeFromFlannel(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Minute)
	defer cancel()
	l := startLabWith(t, ctx, func(o *Options) {
		o.Nodes = 3
		o.Flannel = true
		repo, err := filepath.Abs(filepath.Join("..", "..", ".."))
		if err != nil {
			t.Fatal(err)
		}
		begin := time.Now()
		if o.Bins.FlannelDir, err = FindFlannel(ctx, repo); err != nil {
			t.Fatalf("flannel's image: %v", err)
		}
		t.Logf("hack/flannel-image.sh: %s (%v)", o.Bins.FlannelDir, time.Since(begin).Round(time.Millisecond))
	})
	flannelRef, err := imageRef(filepath.Join(l.bins.FlannelDir, flannelImage))
	if err != nil {
		t.Fatal(err)
	}
	weftRef, err := imageRef(l.bins.WeftImage)
	if err != nil {
		t.Fatal(err)
	}

	// flannel's shape.
	before, err := l.weftPods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range l.nodes {
		if p, ok := before[n.name]; !ok || !p.running || !slices.Equal(p.images, []string{flannelRef}) {
			t.Fatalf("node %s: DaemonSet pod %v, want flanneld Running from %s", n.name, p, flannelRef)
		}
	}
	if _, err := l.PingAll(ctx); err != nil {
		t.Fatalf("on flannel, before the upgrade: %v", err)
	}
	subnets, err := l.subnetState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range l.nodes {
		if subnets[n.name+" flannel.alpha.coreos.com/backend-data"] == "" || subnets[n.name+" flannel.alpha.coreos.com/kube-subnet-manager"] != "true" {
			t.Fatalf("node %s: flannel's annotations missing: %v", n.name, subnets)
		}
	}
	macs := vtepMACs(t, ctx, l)
	masq := masqRules(t, ctx, l)
	for _, n := range l.nodes {
		if len(masq[n.name]) != 10 {
			t.Fatalf("node %s: flanneld --ip-masq made %d rules, want 10 (SPEC.md): %q", n.name, len(masq[n.name]), masq[n.name])
		}
		t.Logf("node %s on flannel: flannel.1 %s, %d --ip-masq rules, %s", n.name, macs[n.name], len(masq[n.name]),
			strings.ReplaceAll(strings.TrimSpace(subnets[n.name+" subnet.env"]), "\n", " "))
	}

	// The upgrade: kube-weft.yml as the lab wrote it (its image set to the
	// lab's), applied over flannel's objects.
	m, err := os.ReadFile(filepath.Join(l.o.Dir, WeftManifest))
	if err != nil {
		t.Fatal(err)
	}
	pods := podsByNode(t, ctx, l)
	pings := []*pinger{l.startPing(t, ctx, pods[0], pods[1]), l.startPing(t, ctx, pods[2], pods[0])}
	time.Sleep(500 * time.Millisecond)
	begin := time.Now()
	if err := l.cp.Apply(ctx, string(m)); err != nil {
		t.Fatal(err)
	}
	err = l.waitRollout(ctx, weftRef, before)
	checkRollout(t, ctx, l, err, time.Since(begin), weftRef, pings, flannelMaxLost, subnets)

	after := vtepMACs(t, ctx, l)
	for _, n := range l.nodes {
		if after[n.name] != macs[n.name] {
			t.Errorf("node %s: flannel.1's MAC changed in the upgrade: %s -> %s", n.name, macs[n.name], after[n.name])
		}
	}
	masqAfter := masqRules(t, ctx, l)
	for _, n := range l.nodes {
		for _, r := range masq[n.name] {
			if c := count(masqAfter[n.name], r); c != 1 {
				t.Errorf("node %s: flannel's rule %q is there %d times after the upgrade, want once", n.name, r, c)
			}
		}
		for _, r := range masqAfter[n.name] {
			if c := count(masqAfter[n.name], r); c != 1 {
				t.Errorf("node %s: rule %q is there %d times after the upgrade", n.name, r, c)
			}
		}
		if len(masqAfter[n.name]) != len(masq[n.name]) {
			t.Errorf("node %s: %d --ip-masq rules on weft, %d on flannel:\n  %s", n.name, len(masqAfter[n.name]), len(masq[n.name]),
				strings.Join(masqAfter[n.name], "\n  "))
		}
		t.Logf("node %s on weft: %d --ip-masq rules, each of flannel's once", n.name, len(masqAfter[n.name]))
	}

	// A pod flannel's plugin made, deleted through weft's plugin, and its
	// replacement made by weft's.
	old := pods[0]
	n := l.nodeByName(old.node)
	lease := filepath.Join(n.path("var-lib-cni"), "networks", "cbr0", old.ip.String())
	if _, err := os.Stat(lease); err != nil {
		t.Fatalf("pod %s: host-local's lease of %s: %v", old.name, old.ip, err)
	}
	if _, err := l.cp.Kubectl(ctx, "delete", "pod", "-n", TestNamespace, old.name, "--wait=true", "--timeout=2m"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(lease); !os.IsNotExist(err) {
		t.Errorf("pod %s deleted through weft's plugin: its address %s is still leased (%v)", old.name, old.ip, err)
	}
	err = l.poll(ctx, "a new test pod Running on "+old.node, func() (bool, string, error) {
		ps, err := l.TestPods(ctx)
		if err != nil {
			return false, "", err
		}
		var st []string
		for _, p := range ps {
			if p.node == old.node && p.name != old.name && p.running && p.ip.IsValid() {
				return true, "", nil
			}
			st = append(st, p.name+":"+p.phase)
		}
		return false, strings.Join(st, " "), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	results, err := l.PingAll(ctx)
	if err != nil {
		t.Errorf("after the upgrade, with a pod made by weft's plugin: %v", err)
	}
	if len(results) != 6 {
		t.Errorf("%d pings, want 6", len(results))
	}
	t.Logf("after the upgrade: pod %s replaced through weft's plugin, %d pod-to-pod pings answered", old.name, len(results))
	l.down()
}

// vtepMACs returns flannel.1's MAC address on every node.
func vtepMACs(t *testing.T, ctx context.Context, l *testLab) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, n := range l.nodes {
		b, err := exec.CommandContext(ctx, "ip", "-n", n.ns, "-br", "link", "show", "flannel.1").CombinedOutput()
		if err != nil {
			t.Fatalf("node %s: ip link show flannel.1: %v: %s", n.name, err, b)
		}
		f := strings.Fields(string(b))
		if len(f) < 3 {
			t.Fatalf("node %s: ip -br link: %q", n.name, b)
		}
		out[n.name] = f[2]
	}
	return out
}

// comment matches iptables-save's rendering of a rule's comment.
var comment = regexp.MustCompile(` -m comment --comment ("[^"]*"|\S+)`)

// masqRules returns every node's iptables rules in or into flannel's chains
// (FLANNEL-POSTRTG in nat, FLANNEL-FWD in filter: --ip-masq's), as
// iptables-save prints them without their comments: flanneld v0.28.9
// comments every rule ("flanneld masq"), weftd the jumps into the chains
// alone (SPEC.md), and the rules are otherwise the same.
func masqRules(t *testing.T, ctx context.Context, l *testLab) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, n := range l.nodes {
		b, err := exec.CommandContext(ctx, "ip", "netns", "exec", n.ns, "iptables-save").CombinedOutput()
		if err != nil {
			t.Fatalf("node %s: iptables-save: %v: %s", n.name, err, b)
		}
		table := ""
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "*") {
				table = line[1:]
			}
			if strings.HasPrefix(line, "-A ") && strings.Contains(line, "FLANNEL") {
				out[n.name] = append(out[n.name], table+" "+comment.ReplaceAllString(line, ""))
			}
		}
	}
	return out
}

func count(lines []string, s string) int {
	c := 0
	for _, line := range lines {
		if line == s {
			c++
		}
	}
	return c
}
