package netpol

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/knftables"
)

// TableName is weft's NetworkPolicy table, of family inet.
const TableName = "weft-netpol"

// Base chains and the verdict maps they look pods up in.
const (
	egressChain  = "egress"
	ingressChain = "ingress"
)

// pickupCounter counts the TCP pick-ups the egress base chain drops.
const pickupCounter = "drop-pickup"

// policedSet names the set of family f holding every address of this
// node's pods that a policy selects, in either direction.
func policedSet(f Family) string { return fmt.Sprintf("policed%d", f) }

// podMap names the verdict map of direction d and family f.
func podMap(d Direction, f Family) string { return fmt.Sprintf("pods-%s%d", d.short(), f) }

// baseChains returns the two base chains and their rules, which never
// change.
func baseChains() map[*knftables.Chain][]string {
	out := map[*knftables.Chain][]string{}
	for _, d := range []Direction{Egress, Ingress} {
		name, prio, field := ingressChain, knftables.FilterPriority, "daddr"
		if d == Egress {
			name, prio, field = egressChain, knftables.FilterPriority+"-1", "saddr"
		}
		c := &knftables.Chain{Name: name, Type: knftables.PtrTo(knftables.FilterType),
			Hook: knftables.PtrTo(knftables.ForwardHook), Priority: knftables.PtrTo(prio),
			Comment: knftables.PtrTo("NetworkPolicy " + d.String() + " of this node's pods")}
		rules := []string{
			"ct state established,related accept",
			// Neighbour discovery is not a connection (conntrack leaves it
			// untracked) and NetworkPolicy does not govern it: without it
			// pods of one node lose each other's IPv6 addresses.
			"icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert, nd-redirect } accept",
		}
		if d == Egress {
			// A TCP packet that conntrack picks up mid-stream (no entry:
			// one a change cut, or lost) is not a connection's first and is
			// not evaluated: to or from a policed pod it is dropped, so that
			// a cut connection cannot come back in the other orientation.
			for _, f := range []Family{4, 6} {
				for _, dir := range []string{"saddr", "daddr"} {
					rules = append(rules, fmt.Sprintf("%s %s @%s ct state new tcp flags & (fin | syn | rst | ack) != syn counter name %s drop",
						ipWord(f), dir, policedSet(f), pickupCounter))
				}
			}
		}
		out[c] = append(rules,
			fmt.Sprintf("ip %s vmap @%s", field, podMap(d, 4)),
			fmt.Sprintf("ip6 %s vmap @%s", field, podMap(d, 6)))
	}
	return out
}

func baseChainNames() []string { return []string{egressChain, ingressChain} }

// baseRuleCounts returns the number of rules of each base chain.
func baseRuleCounts() map[string]int {
	out := map[string]int{}
	for c, rules := range baseChains() {
		out[c.Name] = len(rules)
	}
	return out
}

func podMaps() []*knftables.Map {
	var out []*knftables.Map
	for _, d := range []Direction{Egress, Ingress} {
		for _, f := range []Family{4, 6} {
			out = append(out, &knftables.Map{Name: podMap(d, f), Type: addrType(f) + " : verdict",
				Comment: knftables.PtrTo(fmt.Sprintf("%s policies of this node's pods, by address", d))})
		}
	}
	return out
}

func addrType(f Family) string {
	if f == 6 {
		return "ipv6_addr"
	}
	return "ipv4_addr"
}

func ipWord(f Family) string {
	if f == 6 {
		return "ip6"
	}
	return "ip"
}

// ruleText renders a rule in nftables syntax.
func ruleText(r Rule) string {
	var parts []string
	if r.Peer != "" {
		field := "saddr"
		if r.Dir == Egress {
			field = "daddr"
		}
		parts = append(parts, fmt.Sprintf("%s %s @%s", ipWord(r.Family), field, r.Peer))
	}
	if r.Ports != "" {
		parts = append(parts, "meta l4proto . th dport @"+r.Ports)
	}
	if r.Named != "" {
		parts = append(parts, fmt.Sprintf("%s daddr . meta l4proto . th dport @%s", ipWord(r.Family), r.Named))
	}
	for _, c := range r.Counters {
		parts = append(parts, "counter name "+c)
	}
	if r.Log != "" {
		parts = append(parts, fmt.Sprintf("limit rate 10/second burst 20 packets log prefix %q level info", r.Log))
	}
	switch {
	case r.Jump != "":
		parts = append(parts, "jump "+r.Jump)
	case r.Verdict == Accept:
		parts = append(parts, "accept")
	case r.Verdict == Drop:
		parts = append(parts, "drop")
	}
	return strings.Join(parts, " ")
}

// setObject returns the knftables set for s.
func setObject(name string, s *Set) *knftables.Set {
	o := &knftables.Set{Name: name, Comment: knftables.PtrTo(s.Comment)}
	switch s.Kind {
	case PeerSet:
		o.Type, o.Flags = addrType(s.Family), []knftables.SetFlag{knftables.IntervalFlag}
	case PortSet:
		o.Type, o.Flags = "inet_proto . inet_service", []knftables.SetFlag{knftables.IntervalFlag}
	case NamedSet:
		o.Type = addrType(s.Family) + " . inet_proto . inet_service"
	}
	return o
}

// elementKeys returns the keys of s's elements; s may be nil.
func elementKeys(s *Set) [][]string {
	var out [][]string
	if s == nil {
		return nil
	}
	for _, a := range s.Addrs {
		out = append(out, []string{a.String()})
	}
	for _, p := range s.Ports {
		port := strconv.Itoa(int(p.From))
		if p.To != p.From {
			port += "-" + strconv.Itoa(int(p.To))
		}
		out = append(out, []string{protocolName(p.Proto), port})
	}
	for _, n := range s.Named {
		out = append(out, []string{n.Addr.String(), protocolName(n.Proto), strconv.Itoa(int(n.Port))})
	}
	return out
}

// mapElements returns the verdict map elements of rs, by map name.
func mapElements(rs *Ruleset) map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, m := range podMaps() {
		out[m.Name] = map[string]string{}
	}
	for d, pods := range rs.Pods {
		for a, chain := range pods {
			out[podMap(Direction(d), familyOf(a))][a.String()] = "goto " + chain
		}
	}
	return out
}

// writeAll adds to tx everything rs holds, after a flush of the whole table,
// and deletes the objects listed in stale: one transaction that replaces the
// table's contents, so no packet sees it half written.
func writeAll(tx *knftables.Transaction, rs *Ruleset, stale map[string][]string) {
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("weft: Kubernetes NetworkPolicy")})
	tx.Flush(&knftables.Table{})
	for _, m := range podMaps() {
		tx.Add(m)
	}
	for _, name := range sortedKeys(rs.Sets) {
		s := rs.Sets[name]
		tx.Add(setObject(name, s))
		for _, key := range elementKeys(s) {
			tx.Add(&knftables.Element{Set: name, Key: key})
		}
	}
	for _, name := range sortedKeys(rs.Counters) {
		tx.Add(&knftables.Counter{Name: name, Comment: knftables.PtrTo(rs.Counters[name])})
	}
	for _, name := range sortedKeys(rs.Chains) {
		tx.Add(&knftables.Chain{Name: name, Comment: knftables.PtrTo(rs.Chains[name].Comment)})
	}
	for _, name := range sortedKeys(rs.Chains) {
		for _, r := range rs.Chains[name].Rules {
			tx.Add(&knftables.Rule{Chain: name, Rule: ruleText(r)})
		}
	}
	for name, elems := range mapElements(rs) {
		for _, key := range slices.Sorted(maps.Keys(elems)) {
			tx.Add(&knftables.Element{Map: name, Key: []string{key}, Value: []string{elems[key]}})
		}
	}
	writeBase(tx)
	for _, name := range stale["chain"] {
		if _, ok := rs.Chains[name]; !ok && !slices.Contains(baseChainNames(), name) {
			tx.Delete(&knftables.Chain{Name: name})
		}
	}
	for _, name := range stale["set"] {
		if _, ok := rs.Sets[name]; !ok {
			tx.Delete(&knftables.Set{Name: name})
		}
	}
	for _, name := range stale["counter"] {
		if _, ok := rs.Counters[name]; !ok {
			tx.Delete(&knftables.Counter{Name: name})
		}
	}
	for _, name := range stale["map"] {
		if !slices.ContainsFunc(podMaps(), func(m *knftables.Map) bool { return m.Name == name }) {
			tx.Delete(&knftables.Map{Name: name})
		}
	}
}

// writeBase adds the base chains, last, once the maps and chains they lead
// to hold what they should.
func writeBase(tx *knftables.Transaction) {
	chains := baseChains()
	for _, c := range slices.SortedFunc(maps.Keys(chains), func(a, b *knftables.Chain) int { return strings.Compare(a.Name, b.Name) }) {
		tx.Add(c)
		tx.Flush(c)
		for _, r := range chains[c] {
			tx.Add(&knftables.Rule{Chain: c.Name, Rule: r})
		}
	}
}

// writeChanges adds to tx what turns the table from old into rs, in an
// order in which every reference is valid at each step: new objects first,
// then rules, then map elements, then what is gone.
func writeChanges(tx *knftables.Transaction, old, rs *Ruleset) {
	// New sets; elements of sets that stay, removed before added (an
	// interval set refuses an element that overlaps one it holds).
	for _, name := range sortedKeys(rs.Sets) {
		s, was := rs.Sets[name], old.Sets[name]
		if was == nil {
			tx.Add(setObject(name, s))
		}
		want, have := elementSet(s), elementSet(was)
		for _, k := range elementKeys(was) {
			if !want[strings.Join(k, " . ")] {
				tx.Delete(&knftables.Element{Set: name, Key: k})
			}
		}
		for _, k := range elementKeys(s) {
			if !have[strings.Join(k, " . ")] {
				tx.Add(&knftables.Element{Set: name, Key: k})
			}
		}
	}
	for _, name := range sortedKeys(rs.Counters) {
		if _, ok := old.Counters[name]; !ok {
			tx.Add(&knftables.Counter{Name: name, Comment: knftables.PtrTo(rs.Counters[name])})
		}
	}
	// New chains, then the rules of new and changed ones.
	for _, name := range sortedKeys(rs.Chains) {
		if _, ok := old.Chains[name]; !ok {
			tx.Add(&knftables.Chain{Name: name, Comment: knftables.PtrTo(rs.Chains[name].Comment)})
		}
	}
	for _, name := range sortedKeys(rs.Chains) {
		c, was := rs.Chains[name], old.Chains[name]
		if was != nil && slices.EqualFunc(c.Rules, was.Rules, sameRule) {
			continue
		}
		if was != nil {
			tx.Flush(&knftables.Chain{Name: name})
		}
		for _, r := range c.Rules {
			tx.Add(&knftables.Rule{Chain: name, Rule: ruleText(r)})
		}
	}
	// Map elements.
	oldElems, newElems := mapElements(old), mapElements(rs)
	for _, m := range sortedKeys(newElems) {
		for _, key := range slices.Sorted(maps.Keys(oldElems[m])) {
			if v, ok := newElems[m][key]; !ok || v != oldElems[m][key] {
				tx.Delete(&knftables.Element{Map: m, Key: []string{key}})
			}
		}
		for _, key := range slices.Sorted(maps.Keys(newElems[m])) {
			if v, ok := oldElems[m][key]; !ok || v != newElems[m][key] {
				tx.Add(&knftables.Element{Map: m, Key: []string{key}, Value: []string{newElems[m][key]}})
			}
		}
	}
	// What is gone: chains (flushed first, as one may jump to another),
	// then sets and counters.
	var goneChains []string
	for _, name := range sortedKeys(old.Chains) {
		if _, ok := rs.Chains[name]; !ok {
			goneChains = append(goneChains, name)
			tx.Flush(&knftables.Chain{Name: name})
		}
	}
	for _, name := range goneChains {
		tx.Delete(&knftables.Chain{Name: name})
	}
	for _, name := range sortedKeys(old.Sets) {
		if _, ok := rs.Sets[name]; !ok {
			tx.Delete(&knftables.Set{Name: name})
		}
	}
	for _, name := range sortedKeys(old.Counters) {
		if _, ok := rs.Counters[name]; !ok {
			tx.Delete(&knftables.Counter{Name: name})
		}
	}
}

// elementSet returns the keys of s's elements, each joined as one string; s
// may be nil.
func elementSet(s *Set) map[string]bool {
	out := map[string]bool{}
	if s == nil {
		return out
	}
	for _, k := range elementKeys(s) {
		out[strings.Join(k, " . ")] = true
	}
	return out
}

func sameRule(a, b Rule) bool { return ruleText(a) == ruleText(b) && a.Family == b.Family }

// podAddrs returns the addresses of rs's pods, both directions.
func podAddrs(rs *Ruleset) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, pods := range rs.Pods {
		for a := range pods {
			out[a] = true
		}
	}
	return out
}
