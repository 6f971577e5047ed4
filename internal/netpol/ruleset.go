package netpol

import (
	"net/netip"
	"strings"
)

// Direction is a policy direction.
type Direction uint8

// The two directions.
const (
	Ingress Direction = iota
	Egress
)

func (d Direction) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// short is the direction's part of object names.
func (d Direction) short() string {
	if d == Egress {
		return "out"
	}
	return "in"
}

// Family is an address family of a rule or set: 4, 6, or 0 for rules that
// match no address.
type Family uint8

// familyOf returns a's family.
func familyOf(a netip.Addr) Family {
	if a.Is4() {
		return 4
	}
	return 6
}

// Verdict is what a rule does when it matches.
type Verdict uint8

// Verdicts. A rule with Jump set jumps and has no verdict.
const (
	Continue Verdict = iota
	Accept
	Drop
)

// Rule is one rule of a chain: every condition that is set must hold.
type Rule struct {
	Dir    Direction // which address Peer matches: ingress the source, egress the destination
	Family Family    // 4 or 6 when the rule matches an address, else 0
	Peer   string    // interval set of peer addresses; "" matches any
	Ports  string    // interval set of protocol . destination port; "" matches any
	Named  string    // set of destination address . protocol . port; "" matches any
	Jump   string    // a chain to jump to (then Verdict is Continue)
	// Dispatch, when set, is the whole rule: the packet's protocol and
	// destination port looked up, and a jump to the chain found.
	Dispatch []PortJump
	// Counters are named counters the rule counts its packets on.
	Counters []string
	// Log, when set, logs the packet to the kernel log with this prefix,
	// at most 10 a second per rule.
	Log     string
	Verdict Verdict
}

// Chain is a regular chain: its rules, and a comment naming what it is for.
type Chain struct {
	Comment string
	Rules   []Rule
}

// SetKind is what a set holds.
type SetKind uint8

// Set kinds.
const (
	PeerSet  SetKind = iota // addresses (interval)
	PortSet                 // protocol . port (interval)
	NamedSet                // address . protocol . port
)

// Set is a named set: exactly one of Addrs, Ports or Named is used, by
// Kind; each is normalized (sorted, no overlaps).
type Set struct {
	Kind    SetKind
	Family  Family // PeerSet, NamedSet
	Comment string
	Addrs   []AddrRange
	Ports   []PortRange
	Named   []AddrPort
}

// Size returns the number of elements.
func (s *Set) Size() int { return len(s.Addrs) + len(s.Ports) + len(s.Named) }

// PolicyInfo says what a compiled policy does on this node.
type PolicyInfo struct {
	Key        string
	Directions []Direction
	// Pods is the number of this node's pods it selects.
	Pods int
	// Counters are its drop counters, by direction.
	Counters map[Direction]string
}

// Ruleset is the whole of weft's table for one node, as data.
type Ruleset struct {
	// Pods maps, per direction, each address of a pod of this node that a
	// policy selects in that direction to the chain of its policies.
	Pods     [2]map[netip.Addr]string
	Chains   map[string]*Chain
	Sets     map[string]*Set
	Counters map[string]string // name -> comment
	// Policies are the policies that select a pod of this node, by key.
	Policies map[string]*PolicyInfo
	// Selected counts, per direction, this node's pods a policy selects.
	Selected [2]int

	// rendered holds each chain's rules as written (render.go).
	rendered map[string][]string
}

func newRuleset() *Ruleset {
	return &Ruleset{
		Pods:     [2]map[netip.Addr]string{{}, {}},
		Chains:   map[string]*Chain{},
		Sets:     map[string]*Set{},
		Counters: map[string]string{},
		Policies: map[string]*PolicyInfo{},
	}
}

// LogDrops adds to each pod chain, before its drop, a rule that logs the
// packet (rate-limited) with the prefix "weft-netpol <direction> denied: ".
// Call it before the Ruleset is written.
func (rs *Ruleset) LogDrops() {
	rs.rendered = nil
	for name, c := range rs.Chains {
		if !strings.HasPrefix(name, "pods-") || len(c.Rules) == 0 {
			continue
		}
		last := c.Rules[len(c.Rules)-1]
		log := Rule{Dir: last.Dir, Log: "weft-netpol " + last.Dir.String() + " denied: "}
		c.Rules = append(c.Rules[:len(c.Rules)-1:len(c.Rules)-1], log, last)
	}
}

// Size returns the numbers of rules and of set and map elements.
func (rs *Ruleset) Size() (rules, elements int) {
	for _, c := range rs.Chains {
		rules += len(c.Rules)
	}
	for _, s := range rs.Sets {
		elements += s.Size()
	}
	return rules, elements + len(rs.Pods[Ingress]) + len(rs.Pods[Egress])
}
