package netpol

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Dispatch by destination port. A pod chain runs the chains of the
// policies selecting its pods until one accepts. A policy whose every rule
// names its ports (numbered ones: a named port's number depends on the
// destination pod) can accept only a packet to one of those ports, so
// instead of a jump per policy, the pod chain looks the packet's protocol
// and port up once, in a verdict map whose each element jumps to the
// policies allowing that port (their own chain, or one of the "via-" chains
// that jumps to several). Policies with a rule for any port, a named port,
// or no port are still jumped to one by one, before the lookup. Which
// policy accepts first changes no verdict: an accept is an accept, and a
// packet none accepts is counted on every selecting policy's drop counter
// after the lookup, as before.

// PortJump is an element of a dispatch verdict map: packets of protocol
// Proto to a port in From-To jump to Chain.
type PortJump struct {
	PortRange
	Chain string
}

// portsOnly returns the port ranges a policy chain can accept packets to,
// and whether it accepts none other: every rule has numbered ports and no
// named ones. A chain with no rule accepts nothing (ok, no ranges).
func (k *compiler) portsOnly(chain string) ([]PortRange, bool) {
	var out []PortRange
	for _, r := range k.rs.Chains[chain].Rules {
		if r.Ports == "" || r.Named != "" {
			return nil, false
		}
		if s := k.rs.Sets[r.Ports]; s != nil {
			out = append(out, s.Ports...)
		}
	}
	return normalizePorts(out), true
}

// policyJumps returns the rules of a pod chain of direction d that run the
// policy chains in chains (in order): a jump to each that accepts any port,
// then one dispatch by port to the others.
func (k *compiler) policyJumps(d Direction, chains []string) []Rule {
	var out []Rule
	type restricted struct {
		chain string
		ports []PortRange
	}
	var byPort []restricted
	for _, pc := range chains {
		ports, ok := k.portsOnly(pc)
		if !ok {
			out = append(out, Rule{Dir: d, Jump: pc})
			continue
		}
		byPort = append(byPort, restricted{pc, ports})
	}
	// The elementary ranges between every range's ends, per protocol, each
	// with the policies covering it; neighbours with the same policies
	// joined.
	var edges []PortRange // From: the first port of a piece; To unused
	for _, r := range byPort {
		for _, p := range r.ports {
			edges = append(edges, PortRange{p.Proto, p.From, 0})
			if p.To < 65535 {
				edges = append(edges, PortRange{p.Proto, p.To + 1, 0})
			}
		}
	}
	slices.SortFunc(edges, func(a, b PortRange) int { return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.From, b.From)) })
	edges = slices.Compact(edges)
	var elems []PortJump
	var lastCovering []string
	for i, e := range edges {
		piece := PortRange{e.Proto, e.From, 65535}
		if i+1 < len(edges) && edges[i+1].Proto == e.Proto {
			piece.To = edges[i+1].From - 1
		}
		var covering []string
		for _, r := range byPort {
			if slices.ContainsFunc(r.ports, func(p PortRange) bool { return p.Contains(piece.Proto, piece.From) }) {
				covering = append(covering, r.chain)
			}
		}
		if len(covering) == 0 {
			lastCovering = nil
			continue
		}
		if n := len(elems); n > 0 && elems[n-1].Proto == piece.Proto && uint32(elems[n-1].To)+1 == uint32(piece.From) &&
			slices.Equal(covering, lastCovering) {
			elems[n-1].To = piece.To
			continue
		}
		elems = append(elems, PortJump{piece, k.viaChain(d, covering)})
		lastCovering = covering
	}
	if len(elems) > 0 {
		out = append(out, Rule{Dir: d, Dispatch: elems})
	}
	return out
}

// viaChain returns the chain that runs the policy chains in chains: the
// policy's own when there is one, else a "via-" chain jumping to each,
// shared by every dispatch with the same policies.
func (k *compiler) viaChain(d Direction, chains []string) string {
	if len(chains) == 1 {
		return chains[0]
	}
	name := "via-" + d.short() + "-" + hash(strings.Join(chains, ","))
	if _, ok := k.rs.Chains[name]; !ok {
		c := &Chain{Comment: fmt.Sprintf("%s of %d policies allowing the same ports", d, len(chains))}
		for _, pc := range chains {
			c.Rules = append(c.Rules, Rule{Dir: d, Jump: pc})
		}
		k.rs.Chains[name] = c
	}
	return name
}

// dispatchText renders a dispatch rule's verdict map.
func dispatchText(elems []PortJump) string {
	parts := make([]string, len(elems))
	for i, e := range elems {
		port := fmt.Sprint(e.From)
		if e.To != e.From {
			port += fmt.Sprintf("-%d", e.To)
		}
		parts[i] = fmt.Sprintf("%s . %s : jump %s", protocolName(e.Proto), port, e.Chain)
	}
	// " , ": as in vmapText.
	return "meta l4proto . th dport vmap { " + strings.Join(parts, " , ") + " }"
}

// find returns the chain a packet of protocol proto to port jumps to, or "".
func find(elems []PortJump, proto uint8, port uint16) string {
	for _, e := range elems {
		if e.Contains(proto, port) {
			return e.Chain
		}
	}
	return ""
}
