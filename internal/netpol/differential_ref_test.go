package netpol

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"testing"
	_ "unsafe" // go:linkname

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	kinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/kube-network-policies/pkg/networkpolicy"
)

// The reference: kube-network-policies (the NetworkPolicy agent flannel's
// Helm chart runs beside flannel), pinned at v0.8.0 in go.mod. Its verdict
// on a packet is (*Controller).evaluatePacket: egress policies of the
// source pod, then ingress policies of the destination pod, each found by
// looking the packet's addresses up in its pod informer (hostNetwork pods
// are not indexed; among pods sharing an address the running one wins),
// with named ports resolved on the destination pod's containers and
// ipBlocks matched on the peer's address. It is unexported, so the test
// links to it by name; knpPacket must keep the layout of the package's
// unexported packet type (TestReferenceAdapter fails when it does not).
// Only _test.go files import the module: the product binaries do not link
// it.

// knpPacket mirrors kube-network-policies v0.8.0 pkg/networkpolicy.packet.
type knpPacket struct {
	id      uint32 //nolint:unused // the layout is the reference's (go:linkname below)
	family  corev1.IPFamily
	srcIP   net.IP
	dstIP   net.IP
	proto   corev1.Protocol
	srcPort int
	dstPort int
	payload []byte //nolint:unused // as id
}

//go:linkname knpEvaluatePacket sigs.k8s.io/kube-network-policies/pkg/networkpolicy.(*Controller).evaluatePacket
func knpEvaluatePacket(c *networkpolicy.Controller, ctx context.Context, p knpPacket) bool

// reference is a kube-network-policies controller whose informers are
// never started: the test fills their stores.
type reference struct {
	ctl                        *networkpolicy.Controller
	pods, namespaces, policies cache.Indexer
}

func newReference(tb testing.TB) *reference {
	tb.Helper()
	// The client is never used: the informers are not started and the
	// controller records no event.
	client, err := kubernetes.NewForConfig(&rest.Config{Host: "http://127.0.0.1:9"})
	if err != nil {
		tb.Fatalf("kubernetes client: %v", err)
	}
	f := kinformers.NewSharedInformerFactory(client, 0)
	podInf, nsInf, npInf := f.Core().V1().Pods(), f.Core().V1().Namespaces(), f.Networking().V1().NetworkPolicies()
	// Admin policies are off, so their clients and informers stay nil.
	ctl, err := networkpolicy.NewController(client, npInf, nsInf, podInf, f.Core().V1().Nodes(), nil, nil, nil,
		networkpolicy.Config{NodeName: "n1"})
	if err != nil {
		tb.Fatalf("kube-network-policies controller: %v", err)
	}
	return &reference{ctl: ctl, pods: podInf.Informer().GetIndexer(),
		namespaces: nsInf.Informer().GetIndexer(), policies: npInf.Informer().GetIndexer()}
}

// load replaces the reference's view of the cluster with w, as its
// informers would hold it.
func (r *reference) load(w *world) error {
	var pods, nss, nps []any
	for i := range w.Pods {
		pods = append(pods, w.Pods[i].DeepCopy())
	}
	for i := range w.Namespaces {
		nss = append(nss, w.Namespaces[i].DeepCopy())
	}
	for i := range w.Policies {
		np, err := apiView(&w.Policies[i])
		if err != nil {
			return err
		}
		nps = append(nps, np)
	}
	for _, s := range []struct {
		ix   cache.Indexer
		objs []any
	}{{r.pods, pods}, {r.namespaces, nss}, {r.policies, nps}} {
		if err := s.ix.Replace(s.objs, ""); err != nil {
			return fmt.Errorf("load reference: %w", err)
		}
	}
	return nil
}

// allows returns the reference's verdict on p's first packet.
func (r *reference) allows(p Packet) bool {
	src, dst := p.Src.As16(), p.Dst.As16() // as its packet parser makes them
	kp := knpPacket{family: corev1.IPv4Protocol, srcIP: net.IP(src[:]), dstIP: net.IP(dst[:]), srcPort: 40000, dstPort: int(p.DstPort)}
	if p.Src.Is6() {
		kp.family = corev1.IPv6Protocol
	}
	switch p.Proto {
	case 6:
		kp.proto = corev1.ProtocolTCP
	case 17:
		kp.proto = corev1.ProtocolUDP
	case 132:
		kp.proto = corev1.ProtocolSCTP
	default: // its parser leaves the protocol and ports of others unset
		kp.srcPort, kp.dstPort = 0, 0
	}
	return knpEvaluatePacket(r.ctl, context.Background(), kp)
}

// apiView returns a policy as an informer hands it over: defaulted by the
// API server (policyTypes from the rules, port protocol TCP) and through
// the API's JSON, where an empty list is no list. The reference needs both:
// it reads only spec.policyTypes, dereferences the protocol, and takes
// "egress: []" (which the API never returns) for "allow all". Weft gets the
// policy as generated, so its own defaulting is tested.
func apiView(np *networkingv1.NetworkPolicy) (*networkingv1.NetworkPolicy, error) {
	d := np.DeepCopy()
	if len(d.Spec.PolicyTypes) == 0 {
		d.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
		if len(d.Spec.Egress) > 0 {
			d.Spec.PolicyTypes = append(d.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
		}
	}
	defaultProtocol := func(ports []networkingv1.NetworkPolicyPort) {
		for i := range ports {
			if ports[i].Protocol == nil {
				ports[i].Protocol = ptrTo(corev1.ProtocolTCP)
			}
		}
	}
	for i := range d.Spec.Ingress {
		defaultProtocol(d.Spec.Ingress[i].Ports)
	}
	for i := range d.Spec.Egress {
		defaultProtocol(d.Spec.Egress[i].Ports)
	}
	b, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("policy %s/%s to json: %w", np.Namespace, np.Name, err)
	}
	out := &networkingv1.NetworkPolicy{}
	if err := json.Unmarshal(b, out); err != nil {
		return nil, fmt.Errorf("policy %s/%s from json: %w", np.Namespace, np.Name, err)
	}
	return out, nil
}

// toCluster is weft's view of w: what the controller's informers hand
// Compile (kube.go: stripPod, then podOf).
func toCluster(w *world) *Cluster {
	c := NewCluster()
	for _, ns := range w.Namespaces {
		c.Namespaces[ns.Name] = &Namespace{Name: ns.Name, Labels: ns.Labels}
	}
	for i := range w.Pods {
		stripped, _ := stripPod(w.Pods[i].DeepCopy())
		pod := stripped.(*podObject).pod
		c.Pods[pod.Key()] = pod
	}
	for _, np := range w.Policies {
		p := &Policy{Namespace: np.Namespace, Name: np.Name, Spec: *np.Spec.DeepCopy()}
		c.Policies[p.Key()] = p
	}
	return c
}

func finished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// TestReferenceAdapter checks the link to the reference on cases whose
// verdict the API defines, so that a changed reference cannot pass
// unnoticed.
func TestReferenceAdapter(t *testing.T) {
	ref := newReference(t)
	w := &world{Nodes: []string{"n1"}, Namespaces: []corev1.Namespace{{}}}
	w.Namespaces[0].Name = "x"
	pod := func(name, ip string, port int32) corev1.Pod {
		var p corev1.Pod
		p.Namespace, p.Name, p.Labels, p.Spec.NodeName = "x", name, map[string]string{"pod": name}, "n1"
		p.Spec.Containers = []corev1.Container{{Name: "c", Ports: []corev1.ContainerPort{{Name: "http", Protocol: corev1.ProtocolTCP, ContainerPort: port}}}}
		p.Status.Phase, p.Status.PodIPs = corev1.PodRunning, []corev1.PodIP{{IP: ip}}
		return p
	}
	w.Pods = []corev1.Pod{pod("a", "10.244.1.2", 8080), pod("b", "10.244.1.3", 80)}
	np := networkingv1.NetworkPolicy{Spec: networkingv1.NetworkPolicySpec{PodSelector: podSel("a"),
		Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{PodSelector: ptrTo(podSel("b"))}},
			Ports: []networkingv1.NetworkPolicyPort{namedPort("http", corev1.ProtocolTCP)}}}}}
	np.Namespace, np.Name = "x", "in"
	w.Policies = []networkingv1.NetworkPolicy{np}
	if err := ref.load(w); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		p    Packet
		want bool
	}{
		{pkt("10.244.1.3", "10.244.1.2", 6, 8080), true},   // b -> a's http
		{pkt("10.244.1.3", "10.244.1.2", 6, 80), false},    // not a's http
		{pkt("10.244.1.3", "10.244.1.2", 17, 8080), false}, // http is TCP
		{pkt("203.0.113.9", "10.244.1.2", 6, 8080), false}, // not b
		{pkt("10.244.1.3", "10.244.1.2", 1, 0), false},     // ICMP: no port matches
		{pkt("10.244.1.2", "10.244.1.3", 6, 80), true},     // b is not selected
		{pkt("10.244.1.2", "203.0.113.9", 6, 80), true},    // a's egress is open
	}
	for _, tc := range cases {
		if got := ref.allows(tc.p); got != tc.want {
			t.Errorf("reference on %+v: allowed %v, want %v", tc.p, got, tc.want)
		}
	}
}
