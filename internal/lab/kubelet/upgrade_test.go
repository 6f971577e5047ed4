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
// release manifest (flanneld, flannel's CNI plugin and its iptables rules,
// hack/flannel-image.sh), then deploy/kube-weft.yml applied over it with
// kubectl, as an operator upgrades: the DaemonSet kube-flannel-ds rolls
// from flanneld to weftd node by node while test pods on all three nodes
// ping each other at 100 Hz. Then back: kube-flannel.yml applied over weft.
//
// It checks flannel's shape first (its pods and image, flannel.1, its
// annotations, its 10 --ip-masq rules, every pod reaching every other).
// After each rollout: no ping lost, no Node's podCIDR or flannel annotation
// and no node's subnet.env changed, flannel.1 has the MAC it had on
// flannel on every node, each of flannel's rules (nat and filter) is there
// exactly once; and a test pod that the other network's CNI plugin made is
// deleted (this plugin's DEL frees its address) and its replacement (this
// plugin's ADD) reaches every other pod.
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
	if weftRef == flannelRef {
		t.Fatalf("weft's and flannel's images are both %s", weftRef)
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
	// lab's), applied over flannel's objects; then a pod that flannel's
	// plugin made is replaced through weft's.
	l.rollTo(t, ctx, "weft", filepath.Join(l.o.Dir, WeftManifest), weftRef, subnets, macs, masq)
	l.replacePod(t, ctx, "weft")

	// The way back: flannel's manifest applied again over weft's; then a pod
	// that weft's plugin made is replaced through flannel's.
	l.rollTo(t, ctx, "flannel", filepath.Join(l.o.Dir, flannelManifest), flannelRef, subnets, macs, masq)
	l.replacePod(t, ctx, "flannel")
	l.down()
}

// rollTo applies the manifest file under two 100 Hz pings covering the
// three nodes and waits for the DaemonSet to run image everywhere; then it
// checks, besides checkRollout's losses and subnets, that flannel.1 has the
// MACs and the nodes the --ip-masq rules they had on flannel (each once).
func (l *testLab) rollTo(t *testing.T, ctx context.Context, to, file, image string, subnets, macs map[string]string,
	masq map[string][]string) {
	t.Helper()
	m, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	before, err := l.weftPods(ctx)
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
	err = l.waitRollout(ctx, image, before)
	checkRollout(t, ctx, l, err, time.Since(begin), image, pings, flannelMaxLost, subnets)

	after := vtepMACs(t, ctx, l)
	// A daemon that has just started may still be putting its rules in
	// place (flanneld checks them every 5 s, --iptables-resync, and was once
	// seen 3 s after its rollout with its forward rules not yet back): the
	// rules are compared once they match, or after rulesSettle.
	var rules map[string][]string
	settled := time.Now()
	for deadline := time.Now().Add(rulesSettle); ; time.Sleep(200 * time.Millisecond) {
		rules = masqRules(t, ctx, l)
		if sameRules(masq, rules) || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("on %s: the --ip-masq rules compared %v after the 3 s that followed the rollout", to,
		time.Since(settled).Round(time.Millisecond))
	for _, n := range l.nodes {
		if after[n.name] != macs[n.name] {
			t.Errorf("node %s on %s: flannel.1's MAC is %s, was %s on flannel", n.name, to, after[n.name], macs[n.name])
		}
		for _, r := range masq[n.name] {
			if c := count(rules[n.name], r); c != 1 {
				t.Errorf("node %s on %s: flannel's rule %q is there %d times, want once", n.name, to, r, c)
			}
		}
		if len(rules[n.name]) != len(masq[n.name]) {
			t.Errorf("node %s: %d --ip-masq rules on %s, %d on flannel:\n  %s", n.name, len(rules[n.name]), to,
				len(masq[n.name]), strings.Join(rules[n.name], "\n  "))
		}
		t.Logf("node %s on %s: flannel.1 %s, %d --ip-masq rules, each of flannel's once", n.name, to, after[n.name],
			len(rules[n.name]))
	}
}

// rulesSettle bounds the wait for a daemon's --ip-masq rules after its
// rollout: three of flanneld's 5 s rule checks.
const rulesSettle = 15 * time.Second

// sameRules reports whether every node has exactly the rules of want, each
// once.
func sameRules(want, got map[string][]string) bool {
	for n, rs := range want {
		if len(got[n]) != len(rs) {
			return false
		}
		for _, r := range rs {
			if count(got[n], r) != 1 {
				return false
			}
		}
	}
	return true
}

// replacePod deletes the test pod on the first node, made by the other
// network's CNI plugin, so that its DEL goes through the plugin of
// network (which must free its host-local address), waits for its
// replacement (an ADD through that plugin) and pings every pod from every
// other.
func (l *testLab) replacePod(t *testing.T, ctx context.Context, network string) {
	t.Helper()
	old := podsByNode(t, ctx, l)[0]
	n := l.nodeByName(old.node)
	lease := filepath.Join(n.path("var-lib-cni"), "networks", "cbr0", old.ip.String())
	if _, err := os.Stat(lease); err != nil {
		t.Fatalf("pod %s: host-local's lease of %s: %v", old.name, old.ip, err)
	}
	if _, err := l.cp.Kubectl(ctx, "delete", "pod", "-n", TestNamespace, old.name, "--wait=true", "--timeout=2m"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(lease); !os.IsNotExist(err) {
		t.Errorf("pod %s deleted through %s's plugin: its address %s is still leased (%v)", old.name, network, old.ip, err)
	}
	err := l.poll(ctx, "a new test pod Running on "+old.node, func() (bool, string, error) {
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
		t.Errorf("on %s, with a pod made by its plugin: %v", network, err)
	}
	if len(results) != 6 {
		t.Errorf("%d pings, want 6", len(results))
	}
	t.Logf("on %s: pod %s (%s) replaced through its plugin, %d pod-to-pod pings answered", network, old.name, old.ip,
		len(results))
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
