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

// The table holds no named sets or maps: every set and verdict map is
// written inside the rule that uses it (an anonymous set). nft answers a
// command that adds or deletes elements of a named set by first reading
// every element of every set of the table (nft 1.0.6, on a table of 29,000
// elements: 400-550 ms per transaction), while a rule with its set inside
// costs what any rule does; and a rule whose set changed is a changed rule,
// so a change rewrites exactly the chains whose rules or sets changed.

// baseChain returns base chain d's object.
func baseChain(d Direction) *knftables.Chain {
	name, prio := ingressChain, knftables.FilterPriority
	if d == Egress {
		name, prio = egressChain, knftables.FilterPriority+"-1"
	}
	return &knftables.Chain{Name: name, Type: knftables.PtrTo(knftables.FilterType),
		Hook: knftables.PtrTo(knftables.ForwardHook), Priority: knftables.PtrTo(prio),
		Comment: knftables.PtrTo("NetworkPolicy " + d.String() + " of this node's pods")}
}

// baseRules returns base chain d's rules for rs.
func baseRules(rs *Ruleset, d Direction) []string {
	rules := []string{
		"ct state established,related accept",
		// Neighbour discovery is not a connection (conntrack leaves it
		// untracked) and NetworkPolicy does not govern it: without it
		// pods of one node lose each other's IPv6 addresses.
		"icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert, nd-redirect } accept",
	}
	if d == Egress {
		// A TCP packet that conntrack picks up mid-stream (no entry: one a
		// change cut, or lost) is not a connection's first and is not
		// evaluated: to or from a policed pod it is dropped, so that a cut
		// connection cannot come back in the other orientation.
		for _, f := range []Family{4, 6} {
			policed := setText(rs.Sets[policedSet(f)])
			if policed == "" {
				continue
			}
			for _, dir := range []string{"saddr", "daddr"} {
				rules = append(rules, fmt.Sprintf("%s %s %s ct state new tcp flags & (fin | syn | rst | ack) != syn counter name %s drop",
					ipWord(f), dir, policed, pickupCounter))
			}
		}
	}
	field := "daddr"
	if d == Egress {
		field = "saddr"
	}
	for _, f := range []Family{4, 6} {
		if m := vmapText(rs.Pods[d], f); m != "" {
			rules = append(rules, fmt.Sprintf("%s %s vmap %s", ipWord(f), field, m))
		}
	}
	return rules
}

// vmapText renders the verdict map of the pods of family f: each address to
// (goto) its policies' chain; "" when there are none.
func vmapText(pods map[netip.Addr]string, f Family) string {
	var elems []string
	for _, a := range slices.SortedFunc(maps.Keys(pods), netip.Addr.Compare) {
		if familyOf(a) == f {
			elems = append(elems, a.String()+" : goto "+pods[a])
		}
	}
	if len(elems) == 0 {
		return ""
	}
	// " , ": a chain's name ends at a space (knftables' fake, which checks
	// that each goto names a chain, reads it up to one).
	return "{ " + strings.Join(elems, " , ") + " }"
}

func ipWord(f Family) string {
	if f == 6 {
		return "ip6"
	}
	return "ip"
}

// setText renders s's elements as an anonymous set; "" when s is nil or
// empty (a rule matching an empty set matches nothing).
func setText(s *Set) string {
	keys := elementKeys(s)
	if len(keys) == 0 {
		return ""
	}
	elems := make([]string, len(keys))
	for i, k := range keys {
		elems[i] = strings.Join(k, " . ")
	}
	return "{ " + strings.Join(elems, ", ") + " }"
}

// ruleText renders r in nftables syntax with its sets (named in sets) inside
// it; ok is false when r matches nothing (a set it matches is empty), and
// the rule is then not written.
func ruleText(r Rule, sets map[string]*Set) (text string, ok bool) {
	if r.Dispatch != nil {
		return dispatchText(r.Dispatch), true
	}
	var parts []string
	match := func(format, set string) bool {
		elems := setText(sets[set])
		if elems == "" {
			return false
		}
		parts = append(parts, fmt.Sprintf(format, elems))
		return true
	}
	// The ports first: a policy's ports are few (often one, which nft
	// turns into a comparison), its peers many (a set lookup), and most
	// packets a rule sees are for another port.
	if r.Ports != "" && !match("meta l4proto . th dport %s", r.Ports) {
		return "", false
	}
	if r.Peer != "" {
		field := "saddr"
		if r.Dir == Egress {
			field = "daddr"
		}
		if !match(ipWord(r.Family)+" "+field+" %s", r.Peer) {
			return "", false
		}
	}
	if r.Named != "" && !match(ipWord(r.Family)+" daddr . meta l4proto . th dport %s", r.Named) {
		return "", false
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
	return strings.Join(parts, " "), true
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

// rendered returns the rules of every chain of rs's table as written, base
// chains included. They are made once per Ruleset, at its first write (a
// Ruleset is not changed once written), and kept with it: the next change
// compares with them, and each check counts them.
func rendered(rs *Ruleset) map[string][]string {
	if rs.rendered == nil {
		rs.rendered = render(rs, nil)
	}
	return rs.rendered
}

// render renders rs's chains, reusing prev's rendering of a chain rs shares
// with it (a Compiler reuses a policy's chain and sets, unchanged, while
// nothing the policy reads changes); prev may be nil.
func render(rs, prev *Ruleset) map[string][]string {
	out := map[string][]string{egressChain: baseRules(rs, Egress), ingressChain: baseRules(rs, Ingress)}
	for name, c := range rs.Chains {
		if prev != nil && prev.rendered != nil && prev.Chains[name] == c {
			if r, ok := prev.rendered[name]; ok {
				out[name] = r
				continue
			}
		}
		rules := make([]string, 0, len(c.Rules))
		for _, r := range c.Rules {
			if text, ok := ruleText(r, rs.Sets); ok {
				rules = append(rules, text)
			}
		}
		out[name] = rules
	}
	return out
}

// writeAll adds to tx what replaces the table's contents with rs, given
// every object the kernel's table holds by kind ("chain", "set", "map",
// "counter"): every chain flushed, what rs does not hold deleted (named
// sets and maps, which an earlier weftd wrote, before chains: a map's
// elements may jump to them), then everything rs holds, the base chains
// last. One transaction, so no packet sees the table half written; counters
// that stay keep their counts.
func writeAll(tx *knftables.Transaction, rs *Ruleset, have map[string][]string) {
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("weft: Kubernetes NetworkPolicy")})
	chains := rendered(rs)
	for _, name := range have["chain"] {
		tx.Flush(&knftables.Chain{Name: name})
	}
	for _, name := range have["set"] {
		tx.Delete(&knftables.Set{Name: name})
	}
	for _, name := range have["map"] {
		tx.Delete(&knftables.Map{Name: name})
	}
	for _, name := range have["chain"] {
		if _, ok := chains[name]; !ok {
			tx.Delete(&knftables.Chain{Name: name})
		}
	}
	for _, name := range have["counter"] {
		if _, ok := rs.Counters[name]; !ok {
			tx.Delete(&knftables.Counter{Name: name})
		}
	}
	for _, name := range sortedKeys(rs.Counters) {
		tx.Add(&knftables.Counter{Name: name, Comment: knftables.PtrTo(rs.Counters[name])})
	}
	for _, name := range sortedKeys(rs.Chains) {
		tx.Add(&knftables.Chain{Name: name, Comment: knftables.PtrTo(rs.Chains[name].Comment)})
	}
	for _, name := range sortedKeys(rs.Chains) {
		for _, r := range chains[name] {
			tx.Add(&knftables.Rule{Chain: name, Rule: r})
		}
	}
	for _, d := range []Direction{Egress, Ingress} {
		c := baseChain(d)
		tx.Add(c)
		for _, r := range chains[c.Name] {
			tx.Add(&knftables.Rule{Chain: c.Name, Rule: r})
		}
	}
}

// writeChanges adds to tx what turns the table from old into rs, in an
// order in which every reference is valid at each step: new counters and
// chains first, then the rules of every chain whose rules (sets included)
// changed, base chains included, then what is gone.
func writeChanges(tx *knftables.Transaction, old, rs *Ruleset) {
	for _, name := range sortedKeys(rs.Counters) {
		if _, ok := old.Counters[name]; !ok {
			tx.Add(&knftables.Counter{Name: name, Comment: knftables.PtrTo(rs.Counters[name])})
		}
	}
	for _, name := range sortedKeys(rs.Chains) {
		if _, ok := old.Chains[name]; !ok {
			tx.Add(&knftables.Chain{Name: name, Comment: knftables.PtrTo(rs.Chains[name].Comment)})
		}
	}
	before, after := rendered(old), rendered(rs)
	for _, name := range sortedKeys(after) {
		rules, was := after[name], before[name]
		if _, existed := before[name]; existed && slices.Equal(rules, was) {
			continue
		}
		if _, existed := before[name]; existed {
			tx.Flush(&knftables.Chain{Name: name})
		}
		for _, r := range rules {
			tx.Add(&knftables.Rule{Chain: name, Rule: r})
		}
	}
	// What is gone: chains (flushed first, as one may jump to another),
	// then counters.
	var gone []string
	for _, name := range sortedKeys(before) {
		if _, ok := after[name]; !ok {
			gone = append(gone, name)
			tx.Flush(&knftables.Chain{Name: name})
		}
	}
	for _, name := range gone {
		tx.Delete(&knftables.Chain{Name: name})
	}
	for _, name := range sortedKeys(old.Counters) {
		if _, ok := rs.Counters[name]; !ok {
			tx.Delete(&knftables.Counter{Name: name})
		}
	}
}
