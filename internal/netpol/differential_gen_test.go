package netpol

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The generator of the differential test and of FuzzCompile: small
// clusters, as the API server holds them, whose every choice comes from a
// chooser (a seeded random source, or the fuzzer's bytes). Values are drawn
// from small pools so that selectors, named ports, port numbers and ipBlocks
// hit the pods and packets often.

// chooser makes the generator's choices: intn returns a number in [0, n).
type chooser interface{ intn(n int) int }

type randChooser struct{ r *rand.Rand }

func (c randChooser) intn(n int) int { return c.r.IntN(n) }

// byteChooser takes choices from fuzz input; once it is used up every
// choice is 0, which the generator reads as "the smallest": so any input
// makes a finite cluster.
type byteChooser struct{ b []byte }

func (c *byteChooser) intn(n int) int {
	if n <= 1 || len(c.b) == 0 {
		return 0
	}
	v := int(c.b[0])
	c.b = c.b[1:]
	if n > 256 && len(c.b) > 0 {
		v = v<<8 | int(c.b[0])
		c.b = c.b[1:]
	}
	return v % n
}

// world is a generated cluster as the API holds it. It marshals to JSON,
// which the minimizer cuts down.
type world struct {
	Nodes      []string                     `json:"nodes"`
	Namespaces []corev1.Namespace           `json:"namespaces"`
	Pods       []corev1.Pod                 `json:"pods"`
	Policies   []networkingv1.NetworkPolicy `json:"policies"`
}

type gen struct {
	c chooser
	// malformed adds what the API server refuses: bad selectors, CIDRs,
	// ports and protocols(), empty peers (FuzzCompile).
	malformed bool
	w         *world
	next      map[string]int // next host number per node and family
}

func (g *gen) n(n int) int           { return g.c.intn(n) }
func (g *gen) chance(pct int) bool   { return g.c.intn(100) < pct }
func pick[T any](g *gen, xs []T) T   { return xs[g.c.intn(len(xs))] }
func between(g *gen, lo, hi int) int { return lo + g.c.intn(hi-lo+1) }
func ptrTo[T any](v T) *T            { return &v }
func nodeIndex(node string) (i int)  { _, _ = fmt.Sscanf(node, "n%d", &i); return i } // 0 for a node not named n<i>
func (g *gen) bad(pct int) bool      { return g.malformed && g.chance(pct) }

// The pools values are drawn from.
func podLabelKeys() []string   { return []string{"app", "role", "tier"} }
func podLabelValues() []string { return []string{"web", "db", "x"} }
func nsLabelKeys() []string    { return []string{"team", "env"} }
func nsLabelValues() []string  { return []string{"red", "blue"} }
func portNames() []string      { return []string{"http", "dns", "metrics", "db"} }
func portNumbers() []int32     { return []int32{53, 80, 81, 443, 5432, 8080, 9100, 9101} }
func protocols() []corev1.Protocol {
	return []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP}
}

// outsideAddrs() are addresses no pod has: outside the cluster, and in a pod
// range.
func outsideAddrs() []netip.Addr {
	var out []netip.Addr
	for _, s := range []string{"203.0.113.9", "198.51.100.200", "10.244.9.9", "2001:db8::9", "fd00:9::9"} {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// generateWorld makes a cluster of 2-3 nodes, 2-3 namespaces, 3-8 pods and
// 1-4 policies.
func generateWorld(c chooser, malformed bool) *world {
	g := &gen{c: c, malformed: malformed, w: &world{}, next: map[string]int{}}
	for i := range between(g, 2, 3) {
		g.w.Nodes = append(g.w.Nodes, fmt.Sprintf("n%d", i+1))
	}
	for _, name := range []string{"a", "b", "c"}[:between(g, 2, 3)] {
		labels := map[string]string{"kubernetes.io/metadata.name": name}
		for _, k := range nsLabelKeys() {
			if g.chance(60) {
				labels[k] = pick(g, nsLabelValues())
			}
		}
		g.w.Namespaces = append(g.w.Namespaces, corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}})
	}
	for i := range between(g, 3, 8) {
		g.w.Pods = append(g.w.Pods, g.pod(fmt.Sprintf("p%d", i)))
	}
	for i := range between(g, 1, 4) {
		ns := pick(g, g.w.Namespaces).Name
		g.w.Policies = append(g.w.Policies, networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("np%d", i)}, Spec: g.spec()})
	}
	return g.w
}

func (g *gen) pod(name string) corev1.Pod {
	ns := pick(g, g.w.Namespaces).Name
	if g.bad(5) {
		ns = "gone" // a namespace the cluster does not have
	}
	node := pick(g, g.w.Nodes)
	p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{}},
		Spec: corev1.PodSpec{NodeName: node}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	for _, k := range podLabelKeys() {
		if g.chance(50) {
			p.Labels[k] = pick(g, podLabelValues())
		}
	}
	// Creation times may tie; some pods are terminating (still running).
	created := time.Date(2026, 1, 1, 0, g.n(4), 0, 0, time.UTC)
	p.CreationTimestamp = metav1.NewTime(created)
	if g.chance(10) {
		p.DeletionTimestamp = ptrTo(metav1.NewTime(created.Add(time.Hour)))
	}
	for c := range between(g, 1, 2) {
		ctr := corev1.Container{Name: fmt.Sprintf("c%d", c)}
		used := map[string]bool{} // names are unique within a container, not within a pod
		for range g.n(3) {
			pn := pick(g, portNames())
			if used[pn] {
				continue
			}
			used[pn] = true
			ctr.Ports = append(ctr.Ports, corev1.ContainerPort{Name: pn, Protocol: pick(g, protocols()), ContainerPort: pick(g, portNumbers())})
		}
		p.Spec.Containers = append(p.Spec.Containers, ctr)
	}
	switch k := g.n(100); {
	case k < 75: // running with addresses
		p.Status.PodIPs = g.freshIPs(node)
		if g.bad(5) && len(g.w.Pods) > 0 { // two running pods with one address
			p.Status.PodIPs = pick(g, g.w.Pods).Status.PodIPs
		}
	case k < 85: // host network: the node's addresses
		p.Spec.HostNetwork = true
		i := nodeIndex(node)
		p.Status.PodIPs = []corev1.PodIP{{IP: fmt.Sprintf("192.168.50.%d", i)}, {IP: fmt.Sprintf("fd00:ff::%d", i)}}
	case k < 95: // finished: an address of its own, or one a running pod has now
		p.Status.Phase = pick(g, []corev1.PodPhase{corev1.PodSucceeded, corev1.PodFailed})
		p.Status.PodIPs = g.freshIPs(node)
		if len(g.w.Pods) > 0 && g.chance(50) {
			p.Status.PodIPs = pick(g, g.w.Pods).Status.PodIPs
		}
	default: // not started: no address yet
		p.Status.Phase = corev1.PodPending
	}
	return p
}

// freshIPs allocates the next addresses of node's pod ranges: IPv4, IPv6 or
// both.
func (g *gen) freshIPs(node string) []corev1.PodIP {
	i := nodeIndex(node)
	var out []corev1.PodIP
	fams := pick(g, [][]int{{4, 6}, {4, 6}, {4}, {6}, {6, 4}})
	for _, f := range fams {
		key := fmt.Sprint(node, f)
		g.next[key]++
		h := g.next[key] + 1
		ip := fmt.Sprintf("10.244.%d.%d", i, h)
		if f == 6 {
			ip = fmt.Sprintf("fd00:%d::%x", i, h)
		}
		out = append(out, corev1.PodIP{IP: ip})
	}
	return out
}

func (g *gen) spec() networkingv1.NetworkPolicySpec {
	s := networkingv1.NetworkPolicySpec{PodSelector: g.selector(podLabelKeys(), podLabelValues())}
	switch g.n(6) {
	case 0, 1: // implicit
	case 2:
		s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	case 3:
		s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	case 4:
		s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	case 5:
		s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress, networkingv1.PolicyTypeIngress}
	}
	if g.bad(5) {
		s.PolicyTypes = append(s.PolicyTypes, "Sideways")
	}
	if g.chance(70) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{}
		for range g.n(4) {
			s.Ingress = append(s.Ingress, networkingv1.NetworkPolicyIngressRule{From: g.peers(), Ports: g.ports()})
		}
	}
	if g.chance(60) {
		s.Egress = []networkingv1.NetworkPolicyEgressRule{}
		for range g.n(4) {
			s.Egress = append(s.Egress, networkingv1.NetworkPolicyEgressRule{To: g.peers(), Ports: g.ports()})
		}
	}
	return s
}

// selector returns a label selector over keys and values: empty, labels,
// expressions (In, NotIn, Exists, DoesNotExist) or both.
func (g *gen) selector(keys, values []string) metav1.LabelSelector {
	var s metav1.LabelSelector
	if g.chance(20) {
		return s
	}
	for range g.n(3) {
		if s.MatchLabels == nil {
			s.MatchLabels = map[string]string{}
		}
		s.MatchLabels[pick(g, keys)] = pick(g, values)
	}
	for range g.n(3) {
		e := metav1.LabelSelectorRequirement{Key: pick(g, keys)}
		switch g.n(4) {
		case 0:
			e.Operator = metav1.LabelSelectorOpIn
		case 1:
			e.Operator = metav1.LabelSelectorOpNotIn
		case 2:
			e.Operator = metav1.LabelSelectorOpExists
		case 3:
			e.Operator = metav1.LabelSelectorOpDoesNotExist
		}
		if e.Operator == metav1.LabelSelectorOpIn || e.Operator == metav1.LabelSelectorOpNotIn {
			for range between(g, 1, 2) {
				e.Values = append(e.Values, pick(g, values))
			}
		}
		s.MatchExpressions = append(s.MatchExpressions, e)
	}
	if g.malformed {
		g.breakSelector(&s)
	}
	return s
}

// breakSelector makes a selector the API server refuses, now and then.
func (g *gen) breakSelector(s *metav1.LabelSelector) {
	switch g.n(12) {
	case 0:
		s.MatchExpressions = append(s.MatchExpressions, metav1.LabelSelectorRequirement{Key: "app", Operator: "Near", Values: []string{"web"}})
	case 1:
		s.MatchExpressions = append(s.MatchExpressions, metav1.LabelSelectorRequirement{Key: "app", Operator: metav1.LabelSelectorOpIn})
	case 2:
		s.MatchExpressions = append(s.MatchExpressions, metav1.LabelSelectorRequirement{Key: "app", Operator: metav1.LabelSelectorOpExists, Values: []string{"web"}})
	case 3:
		s.MatchLabels = map[string]string{"bad key!": "web"}
	case 4:
		s.MatchLabels = map[string]string{"app": "bad value!"}
	}
}

func (g *gen) peers() []networkingv1.NetworkPolicyPeer {
	if g.chance(25) {
		return nil // any peer
	}
	var out []networkingv1.NetworkPolicyPeer
	for range between(g, 1, 2) {
		var p networkingv1.NetworkPolicyPeer
		switch g.n(4) {
		case 0:
			p.PodSelector = ptrTo(g.selector(podLabelKeys(), podLabelValues()))
		case 1:
			p.NamespaceSelector = ptrTo(g.selector(nsSelectorKeys(g.w), nsSelectorValues(g.w)))
		case 2:
			p.PodSelector = ptrTo(g.selector(podLabelKeys(), podLabelValues()))
			p.NamespaceSelector = ptrTo(g.selector(nsSelectorKeys(g.w), nsSelectorValues(g.w)))
		case 3:
			p.IPBlock = g.ipBlock()
		}
		switch {
		case g.bad(4):
			p = networkingv1.NetworkPolicyPeer{} // no peer at all
		case g.bad(4):
			p.IPBlock, p.PodSelector = g.ipBlock(), &metav1.LabelSelector{}
		}
		out = append(out, p)
	}
	return out
}

func nsSelectorKeys(*world) []string {
	return append([]string{"kubernetes.io/metadata.name"}, nsLabelKeys()...)
}

func nsSelectorValues(w *world) []string {
	out := append([]string(nil), nsLabelValues()...)
	for _, ns := range w.Namespaces {
		out = append(out, ns.Name)
	}
	return out
}

// ipBlock returns a block around an address of the cluster (a pod's, a
// node's or an outside one), with excepts around other addresses inside it.
func (g *gen) ipBlock() *networkingv1.IPBlock {
	addrs := append(worldAddrs(g.w), outsideAddrs()...)
	anchor := pick(g, addrs)
	bits := pick(g, []int{0, 8, 16, 24, 28, 32})
	if anchor.Is6() {
		bits = pick(g, []int{0, 16, 32, 48, 64, 120, 128})
	}
	cidr := netip.PrefixFrom(anchor, bits)
	b := &networkingv1.IPBlock{CIDR: cidr.Masked().String()}
	if g.chance(15) {
		b.CIDR = cidr.String() // host bits set: both mask them
	}
	for range g.n(3) {
		inner := pick(g, addrs)
		if bits == anchor.BitLen() || !cidr.Contains(inner) {
			continue
		}
		eb := between(g, bits+1, anchor.BitLen())
		b.Except = append(b.Except, netip.PrefixFrom(inner, eb).Masked().String())
	}
	if g.malformed {
		switch g.n(10) {
		case 0:
			b.CIDR = pick(g, []string{"10.0.0.0/33", "banana", "10.244.1.2", "", "fd00::/129", "::ffff:10.244.0.0/112"})
		case 1:
			b.Except = append(b.Except, pick(g, []string{"nope", "10.244.1.0/40", "::ffff:10.244.1.0/120", "10.244.1.2", "0.0.0.0/0"}))
		case 2, 3: // an IPv4 prefix written IPv4-mapped, as Go's net reads it
			if len(b.Except) > 0 && g.chance(50) {
				b.Except[0] = mapped(b.Except[0])
			} else {
				b.CIDR = mapped(b.CIDR)
			}
		}
	}
	return b
}

// mapped writes an IPv4 prefix as an IPv4-mapped IPv6 one
// (10.244.1.0/24 as ::ffff:10.244.1.0/120); others stay as they are.
func mapped(prefix string) string {
	p, err := netip.ParsePrefix(prefix)
	if err != nil || !p.Addr().Is4() {
		return prefix
	}
	return netip.PrefixFrom(netip.AddrFrom16(p.Addr().As16()), p.Bits()+96).String()
}

// worldAddrs returns every address of the world's pods.
func worldAddrs(w *world) []netip.Addr {
	var out []netip.Addr
	for _, p := range w.Pods {
		for _, ip := range p.Status.PodIPs {
			if a, err := netip.ParseAddr(ip.IP); err == nil {
				out = append(out, a)
			}
		}
	}
	return out
}

func (g *gen) ports() []networkingv1.NetworkPolicyPort {
	if g.chance(35) {
		return nil // any port
	}
	var out []networkingv1.NetworkPolicyPort
	for range between(g, 1, 3) {
		var p networkingv1.NetworkPolicyPort
		if !g.chance(25) {
			p.Protocol = ptrTo(pick(g, protocols())) // else the API's default, TCP
		}
		switch k := g.n(100); {
		case k < 15: // every port of the protocol
		case k < 45:
			p.Port = ptrTo(intstr.FromString(pick(g, append(portNames(), "nope"))))
		default:
			n := pick(g, portNumbers())
			p.Port = ptrTo(intstr.FromInt32(n))
			if g.chance(30) {
				p.EndPort = ptrTo(n + pick(g, []int32{0, 1, 20, 1100}))
			}
		}
		if g.malformed {
			g.breakPort(&p)
		}
		out = append(out, p)
	}
	return out
}

// breakPort makes a port the API server refuses, now and then.
func (g *gen) breakPort(p *networkingv1.NetworkPolicyPort) {
	switch g.n(16) {
	case 0:
		p.Protocol = ptrTo(corev1.Protocol(pick(g, []string{"ICMP", "tcp", "", "GRE"})))
	case 1:
		p.Port = ptrTo(intstr.FromInt32(pick(g, []int32{0, -1, 65536, 70000})))
	case 2:
		p.Port, p.EndPort = ptrTo(intstr.FromInt32(9100)), ptrTo(int32(pick(g, []int32{80, 0, 70000})))
	case 3:
		p.Port, p.EndPort = ptrTo(intstr.FromString("http")), ptrTo(int32(9000))
	case 4:
		p.Port = ptrTo(intstr.FromString(pick(g, []string{"80", "", "Bad_Name"})))
	case 5:
		p.Port, p.EndPort = nil, ptrTo(int32(90))
	}
}
