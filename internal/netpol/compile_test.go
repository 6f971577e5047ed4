package netpol

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

func TestCompileEvaluate(t *testing.T) {
	c := testCluster()
	// x/a takes TCP 80 from pods of namespace y, and port serve-81-udp
	// from x/b; it may send only to 10.244.2.0/24 except 10.244.2.3.
	addPolicy(c, "x", "in", networkingv1.NetworkPolicySpec{
		PodSelector: podSel("a"),
		Ingress: []networkingv1.NetworkPolicyIngressRule{
			{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: nsSel("y")}}, Ports: []networkingv1.NetworkPolicyPort{tcpPort(80)}},
			{From: []networkingv1.NetworkPolicyPeer{{PodSelector: ptr(podSel("b"))}}, Ports: []networkingv1.NetworkPolicyPort{namedPort("serve-81-udp", corev1.ProtocolUDP)}},
		},
		Egress: []networkingv1.NetworkPolicyEgressRule{
			{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.244.2.0/24", Except: []string{"10.244.2.3/32"}}}}},
		},
	})
	rs, errs := Compile(c, "n1")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	cases := []struct {
		p    Packet
		want bool
	}{
		{pkt("10.244.1.3", "10.244.1.2", 6, 80), true},  // y/a -> x/a:80
		{pkt("10.244.1.3", "10.244.1.2", 6, 81), false}, // wrong port
		{pkt("10.244.2.2", "10.244.1.2", 6, 80), false}, // x/b is not in y
		{pkt("10.244.2.3", "10.244.1.2", 6, 80), true},  // y/b
		{pkt("10.244.2.2", "10.244.1.2", 17, 81), true}, // x/b, named port
		{pkt("10.244.2.2", "10.244.1.2", 6, 81), false}, // named port is UDP
		{pkt("fd00:2::3", "fd00:1::2", 6, 80), true},    // IPv6 too
		{pkt("10.244.1.2", "10.244.2.2", 1, 0), true},   // egress to the block
		{pkt("10.244.1.2", "10.244.2.3", 1, 0), false},  // the except
		{pkt("10.244.1.2", "10.244.1.3", 6, 80), false}, // outside the block
		{pkt("10.244.1.3", "10.244.2.3", 6, 80), true},  // y/a is not selected
		{pkt("fd00:1::2", "fd00:2::2", 6, 80), false},   // no IPv6 block
	}
	for _, logDrops := range []bool{false, true} {
		if logDrops {
			rs.LogDrops() // logs before the drop, and changes no verdict
		}
		for _, tc := range cases {
			if got := rs.Evaluate(tc.p); got != tc.want {
				t.Errorf("%+v (log drops %v): allowed %v, want %v", tc.p, logDrops, got, tc.want)
			}
		}
	}
	// Node n2 has no pod the policy selects: nothing to hold.
	rs2, _ := Compile(c, "n2")
	if len(rs2.Chains) != 0 || len(rs2.Pods[Ingress]) != 0 {
		t.Errorf("n2 got rules: %d chains", len(rs2.Chains))
	}
}

func ptr[T any](v T) *T { return &v }
