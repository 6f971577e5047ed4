package nftables

import (
	"fmt"
	"strings"

	"github.com/weft-net/weft/internal/netfilter"
)

// Render returns weft's table for want as `nft list table` prints it, which
// is also valid `nft -f` input. A chain with no rules is left out.
func Render(want netfilter.FamilyRules) string {
	fam := NFTFamily(want.Family)
	var chains []string
	if len(want.Masq) > 0 {
		chains = append(chains, renderChain(fam, MasqChain, "type nat hook postrouting priority srcnat; policy accept;", want.Masq))
	}
	if len(want.Forward) > 0 {
		chains = append(chains, renderChain(fam, ForwardChain, "type filter hook forward priority filter; policy accept;", want.Forward))
	}
	return fmt.Sprintf("table %s %s {\n%s}\n", fam, TableName(want.Family), strings.Join(chains, "\n"))
}

func renderChain(fam, name, hook string, rules []netfilter.Rule) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\tchain %s {\n\t\t%s\n", name, hook)
	for _, r := range rules {
		fmt.Fprintf(&b, "\t\t%s\n", RuleText(fam, r))
	}
	b.WriteString("\t}\n")
	return b.String()
}

// RuleText renders one rule as nft prints it, e.g.
// "ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random".
func RuleText(fam string, r netfilter.Rule) string {
	var parts []string
	if r.Mark != 0 {
		parts = append(parts, fmt.Sprintf("meta mark & 0x%08x == 0x%08x", r.Mark, r.Mark))
	}
	parts = appendMatch(parts, fam, "saddr", r.Src)
	parts = appendMatch(parts, fam, "daddr", r.Dst)
	verdict := string(r.Verdict)
	if r.Verdict == netfilter.Masquerade && r.FullyRandom {
		verdict += " fully-random"
	}
	return strings.Join(append(parts, verdict), " ")
}

func appendMatch(parts []string, fam, field string, m netfilter.Match) []string {
	switch {
	case m.Any():
		return parts
	case m.Not:
		return append(parts, fam, field, "!=", m.Prefix.String())
	default:
		return append(parts, fam, field, m.Prefix.String())
	}
}
