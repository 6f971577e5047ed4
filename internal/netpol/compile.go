package netpol

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Compile returns the Ruleset of node: the rules for node's pods that
// policies select, from everything in c. Problems in a policy (a selector or
// CIDR the API server should have refused, an unknown protocol) are
// returned, each naming its policy; the part of the policy they affect
// matches nothing, so a bad policy never opens more than a good one.
func Compile(c *Cluster, node string) (*Ruleset, []error) {
	return NewCompiler(node).Compile(c)
}

// Compiler compiles a node's Ruleset again and again, reusing what each
// policy compiled to while nothing it read has changed: the policy, the
// live pods of the namespaces it read, the namespaces' labels when it
// matched them, every pod when it read them all. The objects in the Cluster
// must be replaced, never changed in place, between two calls (the
// informers replace them); Compile, which starts afresh, has no such need.
type Compiler struct {
	node  string
	cache map[string]*policyOut // by policy key
	byNS  map[string][]*Pod     // the last call's live pods by namespace
	ns    map[string]*Namespace // the last call's namespaces
	// Reused and Compiled count the policies of the last call.
	Reused, Compiled int
}

// NewCompiler returns a Compiler for node.
func NewCompiler(node string) *Compiler {
	return &Compiler{node: node, cache: map[string]*policyOut{}}
}

// Compile is the package's Compile of c, reusing what it can.
func (cc *Compiler) Compile(c *Cluster) (*Ruleset, []error) {
	k := &compiler{c: c, node: cc.node, rs: newRuleset(), byNS: map[string][]*Pod{}, byLabel: map[string]map[string][]*Pod{}}
	for _, p := range ownAddresses(c.Pods) {
		k.byNS[p.Namespace] = append(k.byNS[p.Namespace], p)
		k.all = append(k.all, p)
	}
	changed := map[string]bool{} // namespaces whose live pods changed
	for ns, pods := range k.byNS {
		if !slices.Equal(pods, cc.byNS[ns]) {
			changed[ns] = true
		}
	}
	for ns := range cc.byNS {
		if _, ok := k.byNS[ns]; !ok {
			changed[ns] = true
		}
	}
	nsChanged := len(c.Namespaces) != len(cc.ns)
	for name, n := range c.Namespaces {
		nsChanged = nsChanged || cc.ns[name] != n
	}
	k.selectedBy = [2]map[*Pod][]string{{}, {}}
	cache := make(map[string]*policyOut, len(c.Policies))
	cc.Reused, cc.Compiled = 0, 0
	for _, key := range sortedKeys(c.Policies) {
		p := c.Policies[key]
		o := cc.cache[key]
		if o == nil || !o.valid(p, changed, nsChanged) {
			o = k.policy(p)
			cc.Compiled++
		} else {
			cc.Reused++
		}
		k.merge(o)
		cache[key] = o
	}
	k.podChains()
	k.policedSets()
	cc.cache, cc.byNS, cc.ns = cache, k.byNS, maps.Clone(c.Namespaces)
	return k.rs, k.errs
}

// policyOut is what one policy compiled to, and what it read.
type policyOut struct {
	policy   *Policy
	info     *PolicyInfo // nil when it selects no pod of the node
	chains   map[string]*Chain
	sets     map[string]*Set
	counters map[string]string
	// selected are, per direction, the pods it selects and its chain.
	selected [2][]*Pod
	chain    [2]string
	errs     []error
	// What it read: the live pods of namespaces, the namespaces' labels,
	// every live pod.
	namespaces map[string]bool
	nsLabels   bool
	allPods    bool
}

// valid reports whether o is still what p compiles to.
func (o *policyOut) valid(p *Policy, changed map[string]bool, nsChanged bool) bool {
	if o.policy != p || (o.nsLabels && nsChanged) || (o.allPods && len(changed) > 0) {
		return false
	}
	for ns := range o.namespaces {
		if changed[ns] {
			return false
		}
	}
	return true
}

// merge adds what a policy compiled to to the Ruleset.
func (k *compiler) merge(o *policyOut) {
	k.errs = append(k.errs, o.errs...)
	if o.info == nil {
		return
	}
	k.rs.Policies[o.info.Key] = o.info
	maps.Copy(k.rs.Chains, o.chains)
	maps.Copy(k.rs.Sets, o.sets)
	maps.Copy(k.rs.Counters, o.counters)
	for dir, pods := range o.selected {
		for _, pod := range pods {
			k.selectedBy[dir][pod] = append(k.selectedBy[dir][pod], o.chain[dir])
		}
	}
}

type compiler struct {
	c    *Cluster
	node string
	rs   *Ruleset
	errs []error
	byNS map[string][]*Pod // live pods by namespace, in key order
	all  []*Pod            // live pods, in key order
	// selectedBy lists, per direction, the policies selecting each local pod.
	selectedBy [2]map[*Pod][]string
	// byLabel indexes the live pods of a namespace by "key=value" label,
	// built when a peer's matchLabels first needs it; nsNames are the
	// namespaces' names in order, made on first use.
	byLabel map[string]map[string][]*Pod
	nsNames []string
	// out is what the policy being compiled compiles to.
	out *policyOut
}

func (k *compiler) fail(p *Policy, format string, a ...any) {
	k.out.errs = append(k.out.errs, fmt.Errorf("policy %s: %s", p.Key(), fmt.Sprintf(format, a...)))
}

// ownAddresses returns the live pods in key order, each with only the
// addresses it owns: when two hold one address (reused while the old pod's
// object still says Running), the one not terminating, then the newer, then
// the one of the smaller key has it, so the rules do not depend on map
// order.
func ownAddresses(pods map[string]*Pod) []*Pod {
	better := func(a, b *Pod) bool {
		if a.Terminating != b.Terminating {
			return !a.Terminating
		}
		if !a.Created.Equal(b.Created) {
			return a.Created.After(b.Created)
		}
		return a.Key() < b.Key()
	}
	owner := map[netip.Addr]*Pod{}
	var live []*Pod
	for _, key := range sortedKeys(pods) {
		p := pods[key]
		if !p.live() {
			continue
		}
		live = append(live, p)
		for _, a := range p.IPs {
			if o, ok := owner[a]; !ok || better(p, o) {
				owner[a] = p
			}
		}
	}
	out := live[:0]
	for _, p := range live {
		owned := slices.DeleteFunc(slices.Clone(p.IPs), func(a netip.Addr) bool { return owner[a] != p })
		if len(owned) != len(p.IPs) {
			if len(owned) == 0 {
				continue
			}
			cp := *p
			cp.IPs = owned
			p = &cp
		}
		out = append(out, p)
	}
	return out
}

// directions returns the directions a policy affects: its policyTypes, or
// when it has none, ingress always and egress when it has egress rules.
func directions(spec *networkingv1.NetworkPolicySpec) []Direction {
	if len(spec.PolicyTypes) == 0 {
		if len(spec.Egress) > 0 {
			return []Direction{Ingress, Egress}
		}
		return []Direction{Ingress}
	}
	var out []Direction
	for _, t := range []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress} {
		if slices.Contains(spec.PolicyTypes, t) {
			out = append(out, map[networkingv1.PolicyType]Direction{networkingv1.PolicyTypeIngress: Ingress, networkingv1.PolicyTypeEgress: Egress}[t])
		}
	}
	return out
}

// policy compiles p.
func (k *compiler) policy(p *Policy) *policyOut {
	k.out = &policyOut{policy: p, chains: map[string]*Chain{}, sets: map[string]*Set{}, counters: map[string]string{},
		namespaces: map[string]bool{p.Namespace: true}}
	out := k.out
	sel, err := metav1.LabelSelectorAsSelector(&p.Spec.PodSelector)
	if err != nil {
		k.fail(p, "podSelector: %v", err)
		return out
	}
	var selected []*Pod
	for _, pod := range k.byNS[p.Namespace] {
		if pod.Node == k.node && sel.Matches(labels.Set(pod.Labels)) {
			selected = append(selected, pod)
		}
	}
	if len(selected) == 0 {
		return out
	}
	info := &PolicyInfo{Key: p.Key(), Pods: len(selected), Counters: map[Direction]string{}}
	out.info = info
	for _, dir := range directions(&p.Spec) {
		name := dir.short() + "-" + hash(p.Key())
		chain := &Chain{Comment: fmt.Sprintf("%s of %s", dir, p.Key())}
		if dir == Ingress {
			for i, r := range p.Spec.Ingress {
				chain.Rules = append(chain.Rules, k.rule(p, dir, fmt.Sprintf("%s-%d", name, i), r.From, r.Ports, selected)...)
			}
		} else {
			for i, r := range p.Spec.Egress {
				chain.Rules = append(chain.Rules, k.rule(p, dir, fmt.Sprintf("%s-%d", name, i), r.To, r.Ports, selected)...)
			}
		}
		out.chains[name] = chain
		counter := "drop-" + name
		out.counters[counter] = fmt.Sprintf("packets %s denied at pods %s selects", dir, p.Key())
		info.Directions = append(info.Directions, dir)
		info.Counters[dir] = counter
		out.selected[dir], out.chain[dir] = selected, name
	}
	return out
}

// namedRef is a port given by name.
type namedRef struct {
	name  string
	proto Protocol
}

// rule compiles one ingress or egress rule of p into nftables rules and
// their sets, named from base.
func (k *compiler) rule(p *Policy, dir Direction, base string, peers []networkingv1.NetworkPolicyPeer,
	ports []networkingv1.NetworkPolicyPort, selected []*Pod) []Rule {
	anyPeer := len(peers) == 0
	var ranges [2][]AddrRange // v4, v6
	if !anyPeer {
		ranges = k.peerRanges(p, peers)
	}
	numbered, named := k.ports(p, ports)
	var out []Rule
	portsSet := ""
	if len(numbered) > 0 {
		portsSet = base + "-ports"
		k.out.sets[portsSet] = &Set{Kind: PortSet, Comment: "ports of " + base, Ports: numbered}
	}
	wantNumbered := len(numbered) > 0 || len(ports) == 0
	if anyPeer && wantNumbered {
		out = append(out, Rule{Dir: dir, Ports: portsSet, Verdict: Accept})
	}
	for fi, fam := range []Family{4, 6} {
		peerSet := ""
		if !anyPeer {
			if len(ranges[fi]) == 0 {
				continue
			}
			peerSet = fmt.Sprintf("%s-peer%d", base, fam)
			k.out.sets[peerSet] = &Set{Kind: PeerSet, Family: fam, Comment: "peers of " + base, Addrs: ranges[fi]}
			if wantNumbered {
				out = append(out, Rule{Dir: dir, Family: fam, Peer: peerSet, Ports: portsSet, Verdict: Accept})
			}
		}
		if len(named) == 0 {
			continue
		}
		var dests []*Pod
		if dir == Ingress {
			dests = selected
		} else {
			dests, k.out.allPods = k.all, true
		}
		// On egress the destination is the peer: only peers' ports count.
		elems := namedElements(dests, named, fam, func(a netip.Addr) bool {
			return dir == Ingress || anyPeer || inRanges(ranges[fi], a)
		})
		if len(elems) == 0 {
			continue
		}
		namedSet := fmt.Sprintf("%s-named%d", base, fam)
		k.out.sets[namedSet] = &Set{Kind: NamedSet, Family: fam, Comment: "named ports of " + base, Named: elems}
		out = append(out, Rule{Dir: dir, Family: fam, Peer: peerSet, Named: namedSet, Verdict: Accept})
	}
	return out
}

// namedElements resolves named ports on pods: each address of family fam
// that keep accepts, with the port each name has on its pod.
func namedElements(pods []*Pod, refs []namedRef, fam Family, keep func(netip.Addr) bool) []AddrPort {
	var out []AddrPort
	for _, pod := range pods {
		for _, ref := range refs {
			for _, port := range pod.ports(ref.name, ref.proto) {
				for _, a := range pod.IPs {
					if familyOf(a) == fam && keep(a) {
						out = append(out, AddrPort{a, ref.proto.Number(), port})
					}
				}
			}
		}
	}
	slices.SortFunc(out, compareAddrPort)
	return slices.Compact(out)
}

// peerRanges returns the addresses a rule's peers allow, by family.
func (k *compiler) peerRanges(p *Policy, peers []networkingv1.NetworkPolicyPeer) [2][]AddrRange {
	var rs []AddrRange
	for i, peer := range peers {
		if peer.IPBlock != nil {
			rs = append(rs, k.ipBlock(p, i, peer.IPBlock)...)
			continue
		}
		if peer.PodSelector == nil && peer.NamespaceSelector == nil {
			// The API refuses it; it names no one, so it allows no one.
			k.fail(p, "peer %d: no ipBlock, podSelector or namespaceSelector", i)
			continue
		}
		for _, pod := range k.peerPods(p, i, peer) {
			for _, a := range pod.IPs {
				rs = append(rs, single(a))
			}
		}
	}
	var out [2][]AddrRange
	for _, r := range normalize(rs) {
		if r.From.Is4() {
			out[0] = append(out[0], r)
		} else {
			out[1] = append(out[1], r)
		}
	}
	return out
}

func (k *compiler) ipBlock(p *Policy, i int, b *networkingv1.IPBlock) []AddrRange {
	cidr, err := parsePrefix(b.CIDR)
	if err != nil {
		k.fail(p, "peer %d: ipBlock cidr %q: %v", i, b.CIDR, err)
		return nil
	}
	rs := []AddrRange{prefixRange(cidr)}
	for _, e := range b.Except {
		ex, err := parsePrefix(e)
		if err == nil && ex.Addr().Is4() != cidr.Addr().Is4() {
			err = fmt.Errorf("not of the family of cidr %s", b.CIDR)
		}
		if err != nil {
			// Leaving a bad except out would allow what it names: leave the
			// whole block out instead.
			k.fail(p, "peer %d: ipBlock except %q: %v", i, e, err)
			return nil
		}
		rs = subtract(rs, prefixRange(ex))
	}
	return rs
}

// parsePrefix parses a CIDR as the API server reads it: an IPv4-mapped
// IPv6 prefix of /96 or longer is the IPv4 prefix it maps.
func parsePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4In6() {
		return p, err
	}
	if p.Bits() < 96 {
		return netip.Prefix{}, fmt.Errorf("an IPv4-mapped prefix shorter than /96 spans both families")
	}
	return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96), nil
}

// peerPods returns the live pods a pod or namespace selector peer selects.
func (k *compiler) peerPods(p *Policy, i int, peer networkingv1.NetworkPolicyPeer) []*Pod {
	podSel := labels.Everything()
	if peer.PodSelector != nil {
		s, err := metav1.LabelSelectorAsSelector(peer.PodSelector)
		if err != nil {
			k.fail(p, "peer %d: podSelector: %v", i, err)
			return nil
		}
		podSel = s
	}
	namespaces := []string{p.Namespace}
	if peer.NamespaceSelector != nil {
		nsSel, err := metav1.LabelSelectorAsSelector(peer.NamespaceSelector)
		if err != nil {
			k.fail(p, "peer %d: namespaceSelector: %v", i, err)
			return nil
		}
		namespaces = namespaces[:0]
		k.out.nsLabels = true
		if k.nsNames == nil {
			k.nsNames = sortedKeys(k.c.Namespaces)
		}
		for _, name := range k.nsNames {
			if nsSel.Matches(labels.Set(k.c.Namespaces[name].Labels)) {
				namespaces = append(namespaces, name)
			}
		}
	}
	var out []*Pod
	for _, ns := range namespaces {
		k.out.namespaces[ns] = true
		for _, pod := range k.candidates(ns, peer.PodSelector) {
			if podSel.Matches(labels.Set(pod.Labels)) {
				out = append(out, pod)
			}
		}
	}
	return out
}

// candidates returns, in key order, the live pods of namespace ns that may
// match sel: with matchLabels, those carrying its rarest label (from an
// index by label built once per namespace and compile), else all of them.
// The caller matches each against the whole selector.
func (k *compiler) candidates(ns string, sel *metav1.LabelSelector) []*Pod {
	pods := k.byNS[ns]
	if sel == nil || len(sel.MatchLabels) == 0 {
		return pods
	}
	idx := k.byLabel[ns]
	if idx == nil {
		idx = map[string][]*Pod{}
		for _, pod := range pods {
			for key, v := range pod.Labels {
				idx[key+"="+v] = append(idx[key+"="+v], pod)
			}
		}
		k.byLabel[ns] = idx
	}
	var best []*Pod
	first := true
	for key, v := range sel.MatchLabels {
		if c := idx[key+"="+v]; first || len(c) < len(best) {
			best, first = c, false
		}
	}
	return best
}

// ports splits a rule's ports into numbered ranges and named ports.
func (k *compiler) ports(p *Policy, ports []networkingv1.NetworkPolicyPort) ([]PortRange, []namedRef) {
	var numbered []PortRange
	var named []namedRef
	for i, port := range ports {
		proto := TCP
		if port.Protocol != nil {
			proto = Protocol(*port.Protocol)
		}
		n := proto.Number()
		if n == 0 {
			k.fail(p, "port %d: protocol %q is not TCP, UDP or SCTP", i, proto)
			continue
		}
		switch {
		case port.Port == nil:
			numbered = append(numbered, PortRange{n, 0, 65535})
		case port.Port.Type == intstr.String:
			named = append(named, namedRef{port.Port.StrVal, proto})
		default:
			from, to := port.Port.IntVal, port.Port.IntVal
			if port.EndPort != nil {
				to = *port.EndPort
			}
			if from < 1 || to > 65535 || to < from {
				k.fail(p, "port %d: %d to %d is not a port range", i, from, to)
				continue
			}
			numbered = append(numbered, PortRange{n, uint16(from), uint16(to)})
		}
	}
	return normalizePorts(numbered), named
}

// podChains makes, per direction, one chain per distinct set of policies
// selecting a local pod, and maps the pods' addresses to it.
func (k *compiler) podChains() {
	for dir, byPod := range k.selectedBy {
		d := Direction(dir)
		k.rs.Selected[d] = len(byPod)
		for pod, chains := range byPod {
			name := "pods-" + d.short() + "-" + hash(strings.Join(chains, ","))
			if _, ok := k.rs.Chains[name]; !ok {
				c := &Chain{Comment: fmt.Sprintf("%s of pods selected by %d policies", d, len(chains))}
				c.Rules = k.policyJumps(d, chains)
				for _, pc := range chains {
					c.Rules = append(c.Rules, Rule{Dir: d, Counters: []string{"drop-" + pc}})
				}
				c.Rules = append(c.Rules, Rule{Dir: d, Verdict: Drop})
				k.rs.Chains[name] = c
			}
			for _, a := range pod.IPs {
				k.rs.Pods[d][a] = name
			}
		}
	}
}

// policedSets makes the sets of every address of this node's pods that a
// policy selects (the base chain refuses TCP pick-ups to and from them).
// They exist, maybe empty, in every Ruleset.
func (k *compiler) policedSets() {
	var rs [2][]AddrRange
	for _, pods := range k.rs.Pods {
		for a := range pods {
			i := 0
			if !a.Is4() {
				i = 1
			}
			rs[i] = append(rs[i], single(a))
		}
	}
	for i, f := range []Family{4, 6} {
		k.rs.Sets[policedSet(f)] = &Set{Kind: PeerSet, Family: f, Comment: "this node's pods a policy selects", Addrs: normalize(rs[i])}
	}
	k.rs.Counters[pickupCounter] = "TCP packets to or from policed pods of connections conntrack does not track (cut by a change, or lost)"
}

// hash names an object after a string: 12 hex digits of its SHA-256.
func hash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:6])
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
