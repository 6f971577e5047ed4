package netpol

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/knftables"
)

// A change is written without a named set or map, and without an element
// command: nft answers one by first reading every element of every set of
// the table (nft 1.0.6: 400-550 ms on a table of 29,000 elements), where a
// rule with its set inside costs what any rule does.
func TestChangesHaveNoElementCommands(t *testing.T) {
	c := benchCluster(benchScale{Namespaces: 4, Pods: 200, Policies: 40, Local: 3, Others: 10})
	old, errs := Compile(c, "n1")
	if len(errs) > 0 {
		t.Fatal(errs[0])
	}
	changes := map[string]func(){
		"policy added":   func() { benchAddPolicy(c, "ns000", "added", 7) },
		"policy deleted": func() { delete(c.Policies, "ns001/pol0001") },
		"peer pod added": func() {
			p := &Pod{Namespace: "ns002", Name: "new", Node: "other", IPs: []netip.Addr{netip.MustParseAddr("10.128.99.1")},
				Labels: map[string]string{"app": "a2"}}
			c.Pods[p.Key()] = p
		},
		"local pod deleted": func() {
			for key, p := range c.Pods {
				if p.Node == "n1" {
					delete(c.Pods, key)
					return
				}
			}
		},
	}
	for _, name := range sortedKeys(changes) {
		changes[name]()
		rs, errs := Compile(c, "n1")
		if len(errs) > 0 {
			t.Fatal(errs[0])
		}
		tx := NewFakeKernel().NewTransaction()
		writeChanges(tx, old, rs)
		if tx.NumOperations() == 0 {
			t.Fatalf("%s: no change written", name)
		}
		for _, line := range strings.Split(tx.String(), "\n") {
			f := strings.Fields(line)
			if len(f) > 1 && (f[1] == "element" || f[1] == "set" || f[1] == "map") {
				t.Errorf("%s: the change writes %q", name, line)
			}
		}
		old = rs
	}
}

// A table an earlier weftd wrote with named sets and verdict maps is
// replaced whole at the first write: those sets and maps are deleted, and
// the check then finds nothing to repair.
func TestFirstWriteReplacesNamedSets(t *testing.T) {
	ctx := context.Background()
	for name, k := range kernels(t) {
		t.Run(name, func(t *testing.T) {
			tx := k.NewTransaction()
			tx.Add(&knftables.Table{})
			tx.Add(&knftables.Set{Name: "in-0123456789ab-0-peer4", Type: "ipv4_addr", Flags: []knftables.SetFlag{knftables.IntervalFlag}})
			tx.Add(&knftables.Element{Set: "in-0123456789ab-0-peer4", Key: []string{"10.244.9.9"}})
			tx.Add(&knftables.Map{Name: "pods-in4", Type: "ipv4_addr : verdict"})
			tx.Add(&knftables.Chain{Name: "in-0123456789ab"})
			tx.Add(&knftables.Rule{Chain: "in-0123456789ab", Rule: "ip saddr @in-0123456789ab-0-peer4 accept"})
			tx.Add(&knftables.Element{Map: "pods-in4", Key: []string{"10.244.1.2"}, Value: []string{"goto in-0123456789ab"}})
			if err := k.Run(ctx, tx); err != nil {
				t.Fatal(err)
			}
			c := testCluster()
			addPolicy(c, "x", "deny", networkingv1.NetworkPolicySpec{PodSelector: podSel("a")})
			rs, errs := Compile(c, "n1")
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			s := NewSyncer(k, nil, slog.New(slog.DiscardHandler))
			if err := s.Apply(ctx, rs); err != nil {
				t.Fatal(err)
			}
			have, err := k.Census(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(have.Elements) != 0 {
				t.Errorf("named sets or maps left: %v", have.Elements)
			}
			if d := expectedCensus(rs).differences(have); len(d) > 0 {
				t.Errorf("the table differs: %v", d)
			}
			if n, err := s.Check(ctx); n != 0 || err != nil {
				t.Errorf("check found %d differences, %v", n, err)
			}
		})
	}
}

// recordingConntrack holds connections and deletes those match picks.
type recordingConntrack struct {
	conns []Packet
	walks int
}

func (r *recordingConntrack) DeleteConnections(match func(Packet) bool) (int, error) {
	r.walks++
	n := 0
	r.conns = slices.DeleteFunc(r.conns, func(p Packet) bool {
		if match(p) {
			n++
			return true
		}
		return false
	})
	return n, nil
}

// A change cuts the connections it denies, and walks the conntrack table
// only when it may have turned a verdict: a change to no policed pod's
// chains walks nothing.
func TestCutOnlyWhatAChangeMayDeny(t *testing.T) {
	ctx := context.Background()
	c := testCluster()
	fromB := pkt("10.244.2.2", "10.244.1.2", 6, 80)  // x/b -> x/a
	fromYB := pkt("10.244.2.3", "10.244.1.2", 6, 80) // y/b -> x/a
	ct := &recordingConntrack{conns: []Packet{fromB, fromYB}}
	s := NewSyncer(NewFakeKernel(), ct, slog.New(slog.DiscardHandler))
	cc := NewCompiler("n1")
	apply := func() {
		t.Helper()
		rs, errs := cc.Compile(c)
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		if err := s.Apply(ctx, rs); err != nil {
			t.Fatal(err)
		}
	}
	// x/a takes from x/b and y/b: the first write walks the table and cuts
	// nothing.
	addPolicy(c, "x", "in", networkingv1.NetworkPolicySpec{PodSelector: podSel("a"),
		Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: ptr(podSel("b")), NamespaceSelector: &metav1.LabelSelector{}}}}}})
	apply()
	if ct.walks != 1 || len(ct.conns) != 2 {
		t.Fatalf("first write: %d walks, %d connections left; want 1 and 2", ct.walks, len(ct.conns))
	}
	// A pod on n2 that no policy reads a label of: no verdict can turn.
	other := &Pod{Namespace: "y", Name: "c", Node: "n2", Labels: map[string]string{"pod": "c"}, IPs: []netip.Addr{netip.MustParseAddr("10.244.2.9")}}
	c.Pods[other.Key()] = other
	apply()
	if ct.walks != 1 {
		t.Fatalf("a change no policy reads walked the conntrack table (%d walks)", ct.walks)
	}
	// y/b loses its label: the policy's peers change, y/b -> x/a is cut.
	yb := *c.Pods["y/b"]
	yb.Labels = map[string]string{"pod": "b2"}
	c.Pods["y/b"] = &yb
	apply()
	if ct.walks != 2 || len(ct.conns) != 1 || ct.conns[0] != fromB {
		t.Fatalf("after y/b's label changed: %d walks, connections left %v; want 2 and only x/b's", ct.walks, ct.conns)
	}
}
