package netpol

import (
	"fmt"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// A pod chain jumps one by one to the policies that may accept any port,
// and looks the port up once for those whose rules all name ports: tcp
// 80-90 (a), tcp 85-100 (b) and udp 53 (c) give tcp 80-84 to a, 85-90 to a
// via- chain of a and b, 91-100 to b, udp 53 to c; d (a named port) and e
// (any port) are jumped to; f (no rule) and g (whose one rule names no
// peer that exists, so compiles to none) are never run. Verdicts are those
// of the policies, whichever runs first.
func TestDispatchByPort(t *testing.T) {
	c := testCluster()
	from := []networkingv1.NetworkPolicyPeer{{PodSelector: ptr(podSel("b"))}}
	rng := func(proto corev1.Protocol, from, to int32) networkingv1.NetworkPolicyPort {
		p := intstr.FromInt32(from)
		return networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &p, EndPort: &to}
	}
	in := func(name string, rules ...networkingv1.NetworkPolicyIngressRule) {
		addPolicy(c, "x", name, networkingv1.NetworkPolicySpec{PodSelector: podSel("a"), Ingress: rules})
	}
	in("a", networkingv1.NetworkPolicyIngressRule{From: from, Ports: []networkingv1.NetworkPolicyPort{rng(corev1.ProtocolTCP, 80, 90)}})
	in("b", networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{rng(corev1.ProtocolTCP, 85, 100)}})
	in("c", networkingv1.NetworkPolicyIngressRule{From: from, Ports: []networkingv1.NetworkPolicyPort{rng(corev1.ProtocolUDP, 53, 53)}})
	in("d", networkingv1.NetworkPolicyIngressRule{From: from, Ports: []networkingv1.NetworkPolicyPort{namedPort("serve-81-udp", corev1.ProtocolUDP)}})
	in("e", networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "192.0.2.0/24"}}}})
	in("f")
	in("g", networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{PodSelector: ptr(podSel("nobody"))}}})
	rs, errs := Compile(c, "n1")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	chain := func(name string) string { return Ingress.short() + "-" + hash("x/"+name) }
	pods := rs.Chains[rs.Pods[Ingress][pkt("10.244.2.2", "10.244.1.2", 6, 80).Dst]]
	var jumps []string
	var dispatch []PortJump
	for _, r := range pods.Rules {
		if r.Jump != "" {
			jumps = append(jumps, r.Jump)
		}
		dispatch = append(dispatch, r.Dispatch...)
	}
	if want := []string{chain("d"), chain("e")}; !slices.Equal(jumps, want) {
		t.Errorf("jumps %v, want %v (d, e)", jumps, want)
	}
	via := "via-in-" + hash(chain("a")+","+chain("b"))
	want := []PortJump{{PortRange{6, 80, 84}, chain("a")}, {PortRange{6, 85, 90}, via}, {PortRange{6, 91, 100}, chain("b")},
		{PortRange{17, 53, 53}, chain("c")}}
	if !slices.Equal(dispatch, want) {
		t.Errorf("dispatch %v, want %v", dispatch, want)
	}
	if v := rs.Chains[via]; v == nil || len(v.Rules) != 2 || v.Rules[0].Jump != chain("a") || v.Rules[1].Jump != chain("b") {
		t.Errorf("via chain %s: %+v", via, v)
	}
	for _, tc := range []struct {
		p    Packet
		want bool
	}{
		{pkt("10.244.2.2", "10.244.1.2", 6, 80), true},   // a
		{pkt("10.244.2.3", "10.244.1.2", 6, 84), false},  // a, not from b
		{pkt("10.244.2.3", "10.244.1.2", 6, 85), true},   // b: anyone
		{pkt("10.244.2.2", "10.244.1.2", 6, 101), false}, // nobody
		{pkt("10.244.2.2", "10.244.1.2", 17, 53), true},  // c
		{pkt("10.244.2.2", "10.244.1.2", 17, 81), true},  // d, named
		{pkt("10.244.2.2", "10.244.1.2", 1, 0), false},   // ICMP: nobody
	} {
		if got := rs.Evaluate(tc.p); got != tc.want {
			t.Errorf("%v: allowed %v, want %v", fmt.Sprint(tc.p), got, tc.want)
		}
	}
}
