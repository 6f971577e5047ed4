package netpol

import (
	"net/netip"
	"slices"
)

// Packet is the first packet of a connection: what the rules look at.
type Packet struct {
	Src, Dst netip.Addr
	Proto    uint8 // IP protocol number
	DstPort  uint16
}

// Evaluate returns whether the kernel, holding rs, lets p's connection
// start: the egress chains of its source and then the ingress chains of its
// destination, each as nftables runs them.
func (rs *Ruleset) Evaluate(p Packet) bool {
	for _, dir := range []Direction{Egress, Ingress} {
		addr := p.Src
		if dir == Ingress {
			addr = p.Dst
		}
		chain, ok := rs.Pods[dir][addr]
		if !ok {
			continue
		}
		if rs.run(chain, p, 0) != Accept {
			return false
		}
	}
	return true
}

// run runs a chain: Accept or Drop when a rule decides, else Continue.
func (rs *Ruleset) run(name string, p Packet, depth int) Verdict {
	c, ok := rs.Chains[name]
	if !ok || depth > 4 {
		return Continue
	}
	for _, r := range c.Rules {
		if !rs.matches(&r, p) {
			continue
		}
		jump := r.Jump
		if r.Dispatch != nil {
			jump = find(r.Dispatch, p.Proto, p.DstPort)
		}
		if jump != "" {
			if v := rs.run(jump, p, depth+1); v != Continue {
				return v
			}
			continue
		}
		if r.Verdict != Continue {
			return r.Verdict
		}
	}
	return Continue
}

func (rs *Ruleset) matches(r *Rule, p Packet) bool {
	if r.Family != 0 && familyOf(p.Src) != r.Family {
		return false
	}
	if r.Peer != "" {
		peer := p.Src
		if r.Dir == Egress {
			peer = p.Dst
		}
		if s := rs.Sets[r.Peer]; s == nil || !inRanges(s.Addrs, peer) {
			return false
		}
	}
	if r.Ports != "" {
		s := rs.Sets[r.Ports]
		if s == nil || !slices.ContainsFunc(s.Ports, func(pr PortRange) bool { return pr.Contains(p.Proto, p.DstPort) }) {
			return false
		}
	}
	if r.Named != "" {
		s := rs.Sets[r.Named]
		want := AddrPort{p.Dst, p.Proto, p.DstPort}
		if s == nil {
			return false
		}
		if _, found := slices.BinarySearchFunc(s.Named, want, compareAddrPort); !found {
			return false
		}
	}
	return true
}
