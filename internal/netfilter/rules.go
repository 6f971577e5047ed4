package netfilter

import (
	"fmt"
	"net/netip"
	"slices"
)

// Family is an address family. Its value is the IP version.
type Family uint8

// The address families weft manages, in the order it applies them.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

// Families lists every family, IPv4 first.
func Families() []Family { return []Family{IPv4, IPv6} }

// FamilyOf returns the family of p.
func FamilyOf(p netip.Prefix) Family {
	if p.Addr().Is4() {
		return IPv4
	}
	return IPv6
}

// String returns "ipv4" or "ipv6" (the suffix of the nftables table name).
func (f Family) String() string {
	if f == IPv4 {
		return "ipv4"
	}
	return "ipv6"
}

// Multicast is the family's multicast range, which is never masqueraded.
func (f Family) Multicast() netip.Prefix {
	if f == IPv4 {
		return netip.MustParsePrefix("224.0.0.0/4")
	}
	return netip.MustParsePrefix("ff00::/8")
}

// KubeProxyMark is the mark kube-proxy sets on packets it will masquerade
// itself; weft's masquerade chain returns early for them (no double NAT).
const KubeProxyMark uint32 = 0x4000

// Verdict is what a rule does with a matching packet.
type Verdict string

// The verdicts weft's rules use.
const (
	Return     Verdict = "return"
	Masquerade Verdict = "masquerade"
	Accept     Verdict = "accept"
)

// Match matches an address against a prefix; the zero Match matches all.
type Match struct {
	Prefix netip.Prefix
	Not    bool
}

// Any reports whether m matches every address (no condition).
func (m Match) Any() bool { return !m.Prefix.IsValid() }

// Is matches addresses inside p.
func Is(p netip.Prefix) Match { return Match{Prefix: p} }

// Not matches addresses outside p.
func Not(p netip.Prefix) Match { return Match{Prefix: p, Not: true} }

// Rule is one mode-independent rule. Backends render it; they never invent
// rules of their own.
type Rule struct {
	// Mark, when non-zero, matches packets whose mark has all of its bits.
	Mark        uint32
	Src, Dst    Match
	Verdict     Verdict
	FullyRandom bool // Masquerade only: randomise source ports fully
}

// FamilyRules is the desired content of weft's two chains for one family.
// An empty list means the chain (and the jump to it) must be absent.
type FamilyRules struct {
	Family  Family
	Masq    []Rule // nat POSTROUTING
	Forward []Rule // filter FORWARD
}

// Empty reports whether nothing of weft's may exist for the family.
func (r FamilyRules) Empty() bool { return len(r.Masq) == 0 && len(r.Forward) == 0 }

// Validate checks that cfg has at most one network per family and that each
// subnet P lies inside its cluster network C.
func (cfg Config) Validate() error {
	seen := map[Family]bool{}
	for _, n := range cfg.Networks {
		if !n.Cluster.IsValid() || !n.Subnet.IsValid() {
			return fmt.Errorf("netfilter network %v/%v: cluster network and subnet are required", n.Cluster, n.Subnet)
		}
		f := FamilyOf(n.Cluster)
		if FamilyOf(n.Subnet) != f {
			return fmt.Errorf("netfilter network %s: subnet %s is of another address family", n.Cluster, n.Subnet)
		}
		if n.Cluster != n.Cluster.Masked() || n.Subnet != n.Subnet.Masked() {
			return fmt.Errorf("netfilter network %s, subnet %s: host bits set", n.Cluster, n.Subnet)
		}
		if n.Subnet.Bits() < n.Cluster.Bits() || !n.Cluster.Contains(n.Subnet.Addr()) {
			return fmt.Errorf("netfilter network %s: subnet %s is not inside it", n.Cluster, n.Subnet)
		}
		if seen[f] {
			return fmt.Errorf("netfilter networks: more than one %s network", f)
		}
		seen[f] = true
	}
	return nil
}

// Desired returns the rules for every family in cfg.Networks, IPv4 first.
// It is the only place that decides which rules exist, for both modes.
func Desired(cfg Config) []FamilyRules {
	var out []FamilyRules
	for _, n := range cfg.Networks {
		fr := FamilyRules{Family: FamilyOf(n.Cluster)}
		if cfg.Masquerade {
			fr.Masq = masqRules(n, fr.Family, !cfg.FullyRandomDisable)
		}
		if cfg.Forward {
			fr.Forward = forwardRules(n)
		}
		out = append(out, fr)
	}
	slices.SortFunc(out, func(a, b FamilyRules) int { return int(a.Family) - int(b.Family) })
	return out
}

// masqRules is SPEC "Masquerade and forwarding", in order:
//
//	-m mark --mark 0x4000/0x4000 -j RETURN   kube-proxy masquerades these
//	-s P -d C -j RETURN                      pod to cluster: keep source
//	-s C -d P -j RETURN                      cluster to pod: keep source
//	! -s C -d P -j RETURN                    outside to local pod: keep source
//	-s C ! -d multicast -j MASQUERADE        pod to outside
//	! -s C -d C -j MASQUERADE                host to cluster
func masqRules(n Network, f Family, fullyRandom bool) []Rule {
	c, p := n.Cluster, n.Subnet
	return []Rule{
		{Mark: KubeProxyMark, Verdict: Return},
		{Src: Is(p), Dst: Is(c), Verdict: Return},
		{Src: Is(c), Dst: Is(p), Verdict: Return},
		{Src: Not(c), Dst: Is(p), Verdict: Return},
		{Src: Is(c), Dst: Not(f.Multicast()), Verdict: Masquerade, FullyRandom: fullyRandom},
		{Src: Not(c), Dst: Is(c), Verdict: Masquerade, FullyRandom: fullyRandom},
	}
}

// forwardRules accept forwarded traffic from and to the cluster network.
func forwardRules(n Network) []Rule {
	return []Rule{
		{Src: Is(n.Cluster), Verdict: Accept},
		{Dst: Is(n.Cluster), Verdict: Accept},
	}
}
