package netpol

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestReferenceCases holds the cases the differential test and FuzzCompile
// found, minimized: on each, weft must do what kube-network-policies'
// evaluator does.
func TestReferenceCases(t *testing.T) {
	ref := newReference(t)
	ingress := func(peers []networkingv1.NetworkPolicyPeer, ports ...networkingv1.NetworkPolicyPort) networkingv1.NetworkPolicySpec {
		return networkingv1.NetworkPolicySpec{PodSelector: podSel("a"),
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: peers, Ports: ports}}}
	}
	block := func(cidr string, except ...string) []networkingv1.NetworkPolicyPeer {
		return []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}}
	}
	cases := []struct {
		name string
		spec networkingv1.NetworkPolicySpec
		p    Packet
	}{{
		// The API checks port names unique within a container only: the
		// name is every container's port of that name.
		name: "named port of the second container",
		spec: ingress(nil, namedPort("http", corev1.ProtocolTCP)),
		p:    pkt("10.244.1.3", "10.244.1.2", 6, 8080),
	}, {
		name: "named port of the first container",
		spec: ingress(nil, namedPort("http", corev1.ProtocolTCP)),
		p:    pkt("10.244.1.3", "10.244.1.2", 6, 80),
	}, {
		// The API refuses a peer with no field; the reference matches
		// nothing with it.
		name: "empty peer",
		spec: ingress([]networkingv1.NetworkPolicyPeer{{}}),
		p:    pkt("10.244.1.3", "10.244.1.2", 17, 443),
	}, {
		// Go's net, the API's validation and the reference read an
		// IPv4-mapped prefix as IPv4.
		name: "IPv4-mapped except",
		spec: ingress(block("10.244.0.0/16", "::ffff:10.244.9.0/120")),
		p:    pkt("10.244.9.9", "10.244.1.2", 6, 80),
	}, {
		name: "IPv4-mapped cidr",
		spec: ingress(block("::ffff:10.244.0.0/112")),
		p:    pkt("10.244.9.9", "10.244.1.2", 6, 80),
	}, {
		name: "IPv4 except outside the mapped one",
		spec: ingress(block("10.244.0.0/16", "::ffff:10.244.9.0/120")),
		p:    pkt("10.244.8.9", "10.244.1.2", 6, 80),
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := caseWorld(tc.spec)
			j, err := newJudge(w, ref)
			if err != nil {
				t.Fatal(err)
			}
			v, skip := j.decide(tc.p)
			if skip != "" || v.mismatch() {
				t.Errorf("%s %s -> %s port %d: weft %s (%v), the reference %s; errors %v",
					protoWord(tc.p.Proto), tc.p.Src, tc.p.Dst, tc.p.DstPort, allowWord(v.weft), v.nodes, allowWord(v.ref), j.errs)
			}
		})
	}
}

// caseWorld is namespace x with pods x/a (10.244.1.2; containers c0 with
// http TCP 80 and c1 with http TCP 8080) and x/b (10.244.1.3) on node n1,
// and policy x/np holding spec.
func caseWorld(spec networkingv1.NetworkPolicySpec) *world {
	pod := func(name, ip string, ctrs ...corev1.Container) corev1.Pod {
		return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name, Labels: map[string]string{"pod": name}},
			Spec:   corev1.PodSpec{NodeName: "n1", Containers: ctrs},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: ip}}}}
	}
	http := func(ctr string, port int32) corev1.Container {
		return corev1.Container{Name: ctr, Ports: []corev1.ContainerPort{{Name: "http", Protocol: corev1.ProtocolTCP, ContainerPort: port}}}
	}
	return &world{
		Nodes: []string{"n1"},
		Namespaces: []corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "x",
			Labels: map[string]string{"kubernetes.io/metadata.name": "x"}}}},
		Pods: []corev1.Pod{pod("a", "10.244.1.2", http("c0", 80), http("c1", 8080)), pod("b", "10.244.1.3")},
		Policies: []networkingv1.NetworkPolicy{{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "np"},
			Spec: spec}},
	}
}
