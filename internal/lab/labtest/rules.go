//go:build linux

package labtest

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/weft-net/weft/internal/lab"
)

// Listings of weft's masquerade and forward rules as the kernel holds them,
// each rule with its nftables handle (and packet counter, where it has one),
// to show that a restart of weftd left the rules alone: a rule deleted and
// added again, even atomically and identical, gets a new handle and a
// counter starting from zero.

// Rule is one line of a listing.
type Rule struct {
	Text    string // with its "# handle N", without its counter
	Packets uint64
	Counted bool // the rule has a counter (Packets is meaningful)
}

var nftCounter = regexp.MustCompile(`counter packets (\d+) bytes \d+`)

// IPTablesRules lists, with `nft -a` in lab namespace ns, weft's iptables
// chains FLANNEL-POSTRTG and FLANNEL-FWD and every rule of POSTROUTING and
// FORWARD (so the place of weft's jumps among others' rules shows), in
// order. iptables-legacy's rules are not in nftables: the listing then has
// no FLANNEL-POSTRTG, which is an error.
func IPTablesRules(ctx context.Context, ns string) ([]Rule, error) {
	keep := []string{"POSTROUTING", "FORWARD", "FLANNEL-POSTRTG", "FLANNEL-FWD"}
	var out []Rule
	for _, table := range []string{"nat", "filter"} {
		listing, err := lab.Exec(ctx, ns, "nft", "-a", "list", "table", "ip", table)
		if err != nil {
			return nil, err
		}
		chain := ""
		for _, line := range strings.Split(listing, "\n") {
			line = strings.TrimSpace(line)
			if f := strings.Fields(line); len(f) > 1 && f[0] == "chain" {
				chain = f[1]
			}
			if !slices.Contains(keep, chain) || !strings.Contains(line, "# handle") {
				continue
			}
			out = append(out, rule(table+" "+chain+": ", line))
		}
	}
	if !slices.ContainsFunc(out, func(r Rule) bool { return strings.Contains(r.Text, "FLANNEL-POSTRTG") }) {
		return nil, fmt.Errorf("nft lists no FLANNEL-POSTRTG in %s's ip nat table (not iptables-nft?)", ns)
	}
	return out, nil
}

// NFTRules lists weft's nftables table (flannel-ipv4 or flannel-ipv6) in lab
// namespace ns with `nft -a`: every chain and rule with its handle, in order.
func NFTRules(ctx context.Context, ns, family, table string) ([]Rule, error) {
	listing, err := lab.Exec(ctx, ns, "nft", "-a", "list", "table", family, table)
	if err != nil {
		return nil, err
	}
	var out []Rule
	for _, line := range strings.Split(listing, "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, rule("", line))
		}
	}
	return out, nil
}

func rule(prefix, line string) Rule {
	r := Rule{Text: prefix + nftCounter.ReplaceAllString(line, "counter")}
	if m := nftCounter.FindStringSubmatch(line); m != nil {
		r.Packets, _ = strconv.ParseUint(m[1], 10, 64)
		r.Counted = true
	}
	return r
}

// CompareRules describes how after differs from before: any line added,
// removed, moved or changed (handles included), and any counter that went
// down. Nothing means the rules were left alone.
func CompareRules(before, after []Rule) []string {
	text := func(rs []Rule) []string {
		out := make([]string, len(rs))
		for i, r := range rs {
			out[i] = r.Text
		}
		return out
	}
	if b, a := text(before), text(after); !slices.Equal(b, a) {
		return []string{fmt.Sprintf("rules changed:\n  before: %q\n  after:  %q", b, a)}
	}
	var out []string
	for i := range before {
		if before[i].Counted && after[i].Packets < before[i].Packets {
			out = append(out, fmt.Sprintf("counter of %q went from %d to %d packets", before[i].Text, before[i].Packets, after[i].Packets))
		}
	}
	return out
}

// Counting reports whether a counter of a line naming one of weft's chains
// (FLANNEL-...) went up from before to after, which CompareRules must have
// found alike.
func Counting(before, after []Rule) bool {
	for i := range min(len(before), len(after)) {
		if strings.Contains(before[i].Text, "FLANNEL-") && after[i].Packets > before[i].Packets {
			return true
		}
	}
	return false
}

// FormatRules renders before and after, alike but for counters, one rule a
// line with "[before -> after]" packets where the rule counts.
func FormatRules(before, after []Rule) string {
	var b strings.Builder
	for i := range before {
		if before[i].Counted && i < len(after) {
			fmt.Fprintf(&b, "\n  [%d -> %d] %s", before[i].Packets, after[i].Packets, before[i].Text)
		} else {
			fmt.Fprintf(&b, "\n  %s", before[i].Text)
		}
	}
	return b.String()
}
