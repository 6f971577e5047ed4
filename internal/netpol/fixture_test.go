package netpol

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The tests' cluster: node "n1" holds x/a and y/a, node "n2" holds x/b and
// y/b; namespace x is labelled ns=x, y ns=y.
func testCluster() *Cluster {
	c := NewCluster()
	for _, ns := range []string{"x", "y"} {
		c.Namespaces[ns] = &Namespace{Name: ns, Labels: map[string]string{"ns": ns, "kubernetes.io/metadata.name": ns}}
	}
	add := func(ns, name, node string, ips ...string) {
		p := &Pod{Namespace: ns, Name: name, Node: node, Labels: map[string]string{"pod": name},
			Ports: []NamedPort{{"serve-80-tcp", TCP, 80}, {"serve-81-udp", UDP, 81}}}
		for _, ip := range ips {
			p.IPs = append(p.IPs, netip.MustParseAddr(ip))
		}
		c.Pods[p.Key()] = p
	}
	add("x", "a", "n1", "10.244.1.2", "fd00:1::2")
	add("y", "a", "n1", "10.244.1.3", "fd00:1::3")
	add("x", "b", "n2", "10.244.2.2", "fd00:2::2")
	add("y", "b", "n2", "10.244.2.3", "fd00:2::3")
	return c
}

func addPolicy(c *Cluster, ns, name string, spec networkingv1.NetworkPolicySpec) {
	p := &Policy{Namespace: ns, Name: name, Spec: spec}
	c.Policies[p.Key()] = p
}

func podSel(name string) metav1.LabelSelector {
	return metav1.LabelSelector{MatchLabels: map[string]string{"pod": name}}
}

func nsSel(ns string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: map[string]string{"ns": ns}}
}

func tcpPort(p int) networkingv1.NetworkPolicyPort {
	proto := corev1.ProtocolTCP
	port := intstr.FromInt32(int32(p))
	return networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &port}
}

func namedPort(name string, proto corev1.Protocol) networkingv1.NetworkPolicyPort {
	port := intstr.FromString(name)
	return networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &port}
}

func pkt(src, dst string, proto uint8, port uint16) Packet {
	return Packet{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Proto: proto, DstPort: port}
}
