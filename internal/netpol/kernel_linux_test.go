package netpol

import (
	"context"
	"log/slog"
	"os/exec"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/weft-net/weft/internal/netfilter/netfiltertest"
	"github.com/weft-net/weft/internal/testenv"
)

// nsKernel runs the real Kernel inside a test's network namespace: each
// call on a thread switched into it (nft, started there, inherits it).
type nsKernel struct {
	ns string
	k  *NFTKernel
}

func newNSKernel(t *testing.T) *nsKernel {
	t.Helper()
	testenv.Privileged(t, "writes nftables tables in a network namespace", "ip", "nft")
	ns := netfiltertest.NewNS(t)
	nk := &nsKernel{ns: ns}
	if err := netfiltertest.InNS(ns, func() (err error) { nk.k, err = NewKernel(); return err }); err != nil {
		t.Fatal(err)
	}
	return nk
}

func (n *nsKernel) NewTransaction() *knftables.Transaction { return n.k.NewTransaction() }

func (n *nsKernel) Run(ctx context.Context, tx *knftables.Transaction) error {
	return netfiltertest.InNS(n.ns, func() error { return n.k.Run(ctx, tx) })
}

func (n *nsKernel) Census(ctx context.Context) (c *Census, err error) {
	err = netfiltertest.InNS(n.ns, func() error { c, err = n.k.Census(ctx); return err })
	return c, err
}

func (n *nsKernel) nft(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.ns, "nft"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("nft %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// kernels returns the fake and, when the test may use the kernel, the real
// Kernel in a namespace of its own: the same cases run on both.
func kernels(t *testing.T) map[string]Kernel {
	ks := map[string]Kernel{"fake": NewFakeKernel()}
	if testenv.Selected("privileged") {
		ks["nft"] = newNSKernel(t)
	}
	return ks
}

func TestSyncerConformance(t *testing.T) {
	ctx := context.Background()
	for name, k := range kernels(t) {
		t.Run(name, func(t *testing.T) {
			s := NewSyncer(k, nil, slog.New(slog.DiscardHandler))
			c := testCluster()
			steps := []func(){
				func() {}, // no policy: an empty table
				func() {
					addPolicy(c, "x", "deny", networkingv1.NetworkPolicySpec{PodSelector: podSel("a")})
				},
				func() {
					addPolicy(c, "x", "in", networkingv1.NetworkPolicySpec{
						PodSelector: podSel("a"),
						Ingress: []networkingv1.NetworkPolicyIngressRule{
							{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: nsSel("y")}}, Ports: []networkingv1.NetworkPolicyPort{tcpPort(80)}},
							{Ports: []networkingv1.NetworkPolicyPort{namedPort("serve-81-udp", "UDP")}},
						},
						Egress: []networkingv1.NetworkPolicyEgressRule{
							{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.244.2.0/24"}}}}},
							{To: []networkingv1.NetworkPolicyPeer{{PodSelector: ptr(podSel("b"))}}, Ports: []networkingv1.NetworkPolicyPort{namedPort("serve-80-tcp", "TCP")}},
						},
					})
				},
				func() { c.Pods["y/b"].Labels["ns"] = "moved"; c.Pods["x/b"].Labels = map[string]string{} },
				func() { delete(c.Policies, "x/deny") },
				func() { delete(c.Policies, "x/in") },
			}
			for i, step := range steps {
				step()
				rs, errs := Compile(c, "n1")
				if len(errs) > 0 {
					t.Fatal(errs)
				}
				if i == 3 { // --network-policy-log-drops, on for a step
					rs.LogDrops()
				}
				if err := s.Apply(ctx, rs); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				have, err := k.Census(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if d := expectedCensus(rs).differences(have); len(d) > 0 {
					t.Fatalf("step %d: the table differs: %v", i, d)
				}
				if n, err := s.Check(ctx); n != 0 || err != nil {
					t.Fatalf("step %d: check found %d differences, %v", i, n, err)
				}
			}
			if st := s.Stats(); st.FullWrites != 1 || st.Failures != 0 {
				t.Errorf("stats %+v: want one full write (the first) and no failure", st)
			}
			// weftd without --network-policy removes the table, once.
			for i, want := range []bool{true, false} {
				if removed, err := RemoveTable(ctx, k); removed != want || err != nil {
					t.Errorf("RemoveTable %d: %v, %v; want %v", i, removed, err, want)
				}
			}
		})
	}
}
