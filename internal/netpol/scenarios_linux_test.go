package netpol

import (
	"fmt"
	"math/rand/v2"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The datapath tests' policies: hand-written scenarios, one per feature,
// each with a few verdicts the API defines (checked against Evaluate
// before any packet is sent, so that the kernel and Evaluate cannot agree
// on a wrong answer there), and policies drawn at random from the same
// building blocks.

// dpScenario is a set of policies and verdicts the API defines for them.
type dpScenario struct {
	name     string
	policies []*Policy
	// want are probes, "src dst proto port family", and their verdicts.
	want []dpSpot
}

type dpSpot struct {
	src, dst string // pod keys
	proto    uint8
	port     uint16
	fam      Family
	allowed  bool
}

func dpPol(ns, name string, spec networkingv1.NetworkPolicySpec) *Policy {
	return &Policy{Namespace: ns, Name: name, Spec: spec}
}

// npPort is a policy port: proto with port (0: every port) up to end (0:
// no endPort).
func dpPort(proto corev1.Protocol, port, end int32) networkingv1.NetworkPolicyPort {
	p := networkingv1.NetworkPolicyPort{Protocol: &proto}
	if port != 0 {
		v := intstr.FromInt32(port)
		p.Port = &v
	}
	if end != 0 {
		p.EndPort = &end
	}
	return p
}

func dpPeers(peers ...networkingv1.NetworkPolicyPeer) []networkingv1.NetworkPolicyPeer { return peers }

func dpPorts(ps ...networkingv1.NetworkPolicyPort) []networkingv1.NetworkPolicyPort { return ps }

func dpBlock(cidr string, except ...string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}
}

func dpPeerPods(pod string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{PodSelector: ptr(podSel(pod))}
}

func dpPeerNS(ns string, pod string) networkingv1.NetworkPolicyPeer {
	p := networkingv1.NetworkPolicyPeer{NamespaceSelector: nsSel(ns)}
	if pod != "" {
		p.PodSelector = ptr(podSel(pod))
	}
	return p
}

func dpAll() metav1.LabelSelector { return metav1.LabelSelector{} }

var (
	dpIngressOnly = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	dpEgressOnly  = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
)

func dpScenarios() []dpScenario {
	ing := func(r ...networkingv1.NetworkPolicyIngressRule) []networkingv1.NetworkPolicyIngressRule { return r }
	egr := func(r ...networkingv1.NetworkPolicyEgressRule) []networkingv1.NetworkPolicyEgressRule { return r }
	return []dpScenario{
		{name: "no-policy", want: []dpSpot{
			{"x/a", "y/c", protoTCP, 80, 4, true}, {"z/b", "x/a", protoICMP, 0, 6, true},
		}},
		{name: "deny-all-ingress", policies: []*Policy{
			dpPol("y", "deny", networkingv1.NetworkPolicySpec{PodSelector: dpAll(), PolicyTypes: dpIngressOnly}),
		}, want: []dpSpot{
			{"x/a", "y/a", protoTCP, 80, 4, false}, {"x/a", "y/c", protoUDP, 53, 6, false},
			{"x/c", "y/b", protoICMP, 0, 4, false},
			// Replies of connections y's pods start pass their ingress deny.
			{"y/a", "x/b", protoTCP, 81, 4, true}, {"y/c", "x/a", protoUDP, 80, 6, true},
			{"y/b", "z/c", protoICMP, 0, 6, true},
		}},
		{name: "pod-and-namespace-selectors", policies: []*Policy{
			dpPol("x", "sel", networkingv1.NetworkPolicySpec{PodSelector: dpAll(), Ingress: ing(
				networkingv1.NetworkPolicyIngressRule{From: dpPeers(dpPeerPods("b"))},
				networkingv1.NetworkPolicyIngressRule{From: dpPeers(dpPeerNS("y", ""))},
				networkingv1.NetworkPolicyIngressRule{From: dpPeers(dpPeerNS("z", "c"))},
			)}),
		}, want: []dpSpot{
			{"x/b", "x/a", protoTCP, 80, 4, true}, {"x/a", "x/b", protoTCP, 80, 4, false},
			{"y/c", "x/a", protoUDP, 81, 6, true}, {"z/c", "x/b", protoTCP, 82, 4, true},
			{"z/a", "x/c", protoTCP, 80, 4, false}, {"z/c", "x/c", protoICMP, 0, 6, true},
		}},
		{name: "ipblock-except", policies: []*Policy{
			dpPol("y", "blocks", networkingv1.NetworkPolicySpec{PodSelector: podSel("a"), Ingress: ing(
				networkingv1.NetworkPolicyIngressRule{From: dpPeers(dpBlock("10.244.0.0/16", "10.244.2.0/24"), dpBlock("fd00::/8", "fd00:1::/64"))},
			)}),
			dpPol("z", "out", networkingv1.NetworkPolicySpec{PodSelector: podSel("b"), PolicyTypes: dpEgressOnly, Egress: egr(
				networkingv1.NetworkPolicyEgressRule{To: dpPeers(dpBlock("10.244.1.0/24", "10.244.1.10/32"), dpBlock("fd00:2::/64"))},
			)}),
		}, want: []dpSpot{
			{"x/a", "y/a", protoTCP, 80, 4, true}, {"x/c", "y/a", protoTCP, 80, 4, false},
			{"x/c", "y/a", protoTCP, 80, 6, true}, {"x/b", "y/a", protoUDP, 53, 6, false},
			{"z/b", "x/a", protoTCP, 80, 4, false}, {"z/b", "x/b", protoTCP, 80, 4, true},
			{"z/b", "y/c", protoICMP, 0, 6, true}, {"z/b", "y/c", protoICMP, 0, 4, false},
		}},
		{name: "named-ports", policies: []*Policy{
			dpPol("x", "named", networkingv1.NetworkPolicySpec{PodSelector: dpAll(), Ingress: ing(
				networkingv1.NetworkPolicyIngressRule{Ports: dpPorts(namedPort("web", corev1.ProtocolTCP), namedPort("dns", corev1.ProtocolUDP))},
			)}),
			dpPol("z", "named-out", networkingv1.NetworkPolicySpec{PodSelector: podSel("a"), PolicyTypes: dpEgressOnly, Egress: egr(
				networkingv1.NetworkPolicyEgressRule{To: dpPeers(dpPeerNS("y", "")), Ports: dpPorts(namedPort("web", corev1.ProtocolTCP))},
			)}),
		}, want: []dpSpot{
			{"y/a", "x/a", protoTCP, 80, 4, true}, {"y/a", "x/a", protoTCP, 81, 4, false},
			{"y/a", "x/b", protoTCP, 81, 6, true}, {"y/c", "x/c", protoTCP, 82, 4, true},
			{"y/c", "x/c", protoUDP, 81, 4, true}, {"y/c", "x/c", protoUDP, 53, 4, false},
			{"z/a", "y/b", protoTCP, 81, 4, true}, {"z/a", "y/b", protoTCP, 80, 6, false},
			{"z/a", "y/c", protoTCP, 82, 6, true}, {"z/a", "x/a", protoTCP, 80, 4, false},
		}},
		{name: "endport", policies: []*Policy{
			dpPol("y", "range", networkingv1.NetworkPolicySpec{PodSelector: podSel("c"), Ingress: ing(
				networkingv1.NetworkPolicyIngressRule{Ports: dpPorts(dpPort(corev1.ProtocolTCP, 81, 82), dpPort(corev1.ProtocolUDP, 53, 80), dpPort(corev1.ProtocolSCTP, 80, 81))},
			)}),
		}, want: []dpSpot{
			{"x/a", "y/c", protoTCP, 80, 4, false}, {"x/a", "y/c", protoTCP, 81, 4, true},
			{"x/a", "y/c", protoTCP, 82, 6, true}, {"x/c", "y/c", protoUDP, 80, 4, true},
			{"x/c", "y/c", protoUDP, 81, 6, false}, {"z/a", "y/c", protoSCTP, 81, 4, true},
		}},
		{name: "egress-deny-dns-allow", policies: []*Policy{
			dpPol("z", "dns-only", networkingv1.NetworkPolicySpec{PodSelector: dpAll(), PolicyTypes: dpEgressOnly, Egress: egr(
				networkingv1.NetworkPolicyEgressRule{To: dpPeers(dpPeerNS("x", "")), Ports: dpPorts(dpPort(corev1.ProtocolUDP, 53, 0), dpPort(corev1.ProtocolTCP, 53, 0))},
			)}),
		}, want: []dpSpot{
			{"z/a", "x/a", protoUDP, 53, 4, true}, {"z/c", "x/b", protoUDP, 53, 6, true},
			{"z/a", "y/a", protoUDP, 53, 4, false}, {"z/b", "x/a", protoTCP, 80, 4, false},
			{"z/b", "x/c", protoICMP, 0, 4, false}, {"x/a", "z/b", protoTCP, 80, 6, true},
		}},
		{name: "protocol-only-and-union", policies: []*Policy{
			dpPol("x", "udp", networkingv1.NetworkPolicySpec{PodSelector: podSel("c"), Ingress: ing(
				networkingv1.NetworkPolicyIngressRule{Ports: dpPorts(dpPort(corev1.ProtocolUDP, 0, 0))},
			)}),
			dpPol("x", "sctp-from-z", networkingv1.NetworkPolicySpec{PodSelector: podSel("c"), Ingress: ing(
				networkingv1.NetworkPolicyIngressRule{From: dpPeers(dpPeerNS("z", "")), Ports: dpPorts(dpPort(corev1.ProtocolSCTP, 0, 0), dpPort(corev1.ProtocolTCP, 80, 0))},
			)}),
		}, want: []dpSpot{
			{"y/a", "x/c", protoUDP, 81, 4, true}, {"y/a", "x/c", protoTCP, 80, 4, false},
			{"z/a", "x/c", protoTCP, 80, 6, true}, {"z/b", "x/c", protoSCTP, 80, 4, true},
			{"y/b", "x/c", protoSCTP, 80, 6, false}, {"z/c", "x/c", protoICMP, 0, 4, false},
		}},
	}
}

// policyGen draws policies from the scenarios' building blocks.
type policyGen struct{ rng *rand.Rand }

func (g policyGen) pick(s ...string) string { return s[g.rng.IntN(len(s))] }

func (g policyGen) pod() string { return g.pick("a", "b", "c") }

func (g policyGen) namespace() string { return g.pick("x", "y", "z") }

func (g policyGen) selector() metav1.LabelSelector {
	switch g.rng.IntN(3) {
	case 0:
		return dpAll()
	case 1:
		return podSel(g.pod())
	}
	return metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "pod", Operator: metav1.LabelSelectorOpIn, Values: []string{g.pod(), g.pod()}}}}
}

func (g policyGen) peer() networkingv1.NetworkPolicyPeer {
	switch g.rng.IntN(6) {
	case 0:
		return dpPeerPods(g.pod())
	case 1:
		return dpPeerNS(g.namespace(), "")
	case 2:
		return dpPeerNS(g.namespace(), g.pod())
	case 3:
		return dpBlock("10.244.0.0/16", fmt.Sprintf("10.244.%d.0/24", 1+g.rng.IntN(2)))
	case 4:
		// The pods' IPv6 addresses read as their IPv4 ones' last byte.
		n := 1 + g.rng.IntN(2)
		return dpBlock(fmt.Sprintf("fd00:%d::/64", n), fmt.Sprintf("fd00:%d::%d/127", n, 10+2*g.rng.IntN(5)))
	}
	return dpBlock(fmt.Sprintf("10.244.%d.%d/31", 1+g.rng.IntN(2), 10+2*g.rng.IntN(5)))
}

func (g policyGen) port() networkingv1.NetworkPolicyPort {
	switch g.rng.IntN(7) {
	case 0:
		return dpPort(corev1.ProtocolTCP, 80, 0)
	case 1:
		return dpPort(corev1.ProtocolTCP, 81, 82)
	case 2:
		return dpPort(corev1.ProtocolUDP, 53, 0)
	case 3:
		return namedPort("web", corev1.ProtocolTCP)
	case 4:
		return namedPort("dns", corev1.ProtocolUDP)
	case 5:
		return dpPort(corev1.ProtocolSCTP, 0, 0)
	}
	return dpPort(corev1.ProtocolUDP, 80, 81)
}

// some calls f up to max times.
func (g policyGen) some(max int, f func()) {
	for range g.rng.IntN(max + 1) {
		f()
	}
}

// policies draws n policies.
func (g policyGen) policies(n int) []*Policy {
	var out []*Policy
	for i := range n {
		spec := networkingv1.NetworkPolicySpec{PodSelector: g.selector()}
		switch g.rng.IntN(3) {
		case 0:
			spec.PolicyTypes = dpIngressOnly
		case 1:
			spec.PolicyTypes = dpEgressOnly
		default:
			spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
		}
		g.some(2, func() {
			var r networkingv1.NetworkPolicyIngressRule
			g.some(2, func() { r.From = append(r.From, g.peer()) })
			g.some(2, func() { r.Ports = append(r.Ports, g.port()) })
			spec.Ingress = append(spec.Ingress, r)
		})
		g.some(2, func() {
			var r networkingv1.NetworkPolicyEgressRule
			g.some(2, func() { r.To = append(r.To, g.peer()) })
			g.some(2, func() { r.Ports = append(r.Ports, g.port()) })
			spec.Egress = append(spec.Egress, r)
		})
		out = append(out, dpPol(g.namespace(), fmt.Sprintf("random-%d", i), spec))
	}
	return out
}
