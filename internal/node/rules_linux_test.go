package node

import (
	"context"
	"log/slog"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/netfilter"
	"github.com/weft-net/weft/internal/netfilter/iptables"
	"github.com/weft-net/weft/internal/netfilter/netfiltertest"

	"github.com/weft-net/weft/internal/testenv"
)

// Privileged tests: each node is a network namespace of its own
// (netfiltertest.NewNS), holding the rules the case needs, and weft's rules
// are built by newRules and checkRules exactly as weftd and weft status
// build them, with commands run inside the namespace.

func rulesCfg() netfilter.Config {
	return netfilter.Config{Masquerade: true, Forward: true, Networks: []netfilter.Network{
		{Cluster: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.1.0/24")},
		{Cluster: netip.MustParsePrefix("fd00:10:244::/56"), Subnet: netip.MustParsePrefix("fd00:10:244:1::/64")},
	}}
}

// allOwn is what netfiltertest.OwnChains lists when weft's rules of both
// families are in a variant.
func allOwn() []string {
	return []string{"iptables filter FLANNEL-FWD", "iptables nat FLANNEL-POSTRTG",
		"ip6tables filter FLANNEL-FWD", "ip6tables nat FLANNEL-POSTRTG"}
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }

// startRules builds weftd's rule manager for a node namespace as weftd does
// (the options' --iptables-mode, net-conf nc), sets rulesCfg, and returns
// the log.
func startRules(t *testing.T, ns string, o *config.Options, nc *config.NetConf) string {
	t.Helper()
	logs := &testenv.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	rules, err := newRules(log, o, netfiltertest.Runner(ns))(nc)
	if err != nil {
		t.Fatalf("newRules: %v", err)
	}
	if err := rules.Set(context.Background(), rulesCfg()); err != nil {
		t.Fatalf("Set: %v", err)
	}
	return logs.String()
}

// check runs weft status' rule check for a node namespace.
func check(t *testing.T, ns string, o *config.Options, nc *config.NetConf) []string {
	t.Helper()
	diffs, err := checkRules(slog.New(slog.DiscardHandler), o, netfiltertest.Runner(ns))(context.Background(), nc, rulesCfg())
	if err != nil {
		t.Fatalf("checkRules: %v", err)
	}
	return diffs
}

func options(mode string) *config.Options {
	o := config.Defaults()
	o.IPMasq = true
	o.IPTablesMode = mode
	return &o
}

// TestRulesVariant: weft's rules go in the variant the node's kube rules
// are in, an empty node gets the wrapper's default (nft), the flag wins,
// and weftd says which and why on one Info line; weft status then judges
// the same variant and finds nothing to report.
func TestRulesVariant(t *testing.T) {
	netfiltertest.RequireRoot(t, netfiltertest.VariantBinaries()...)
	tests := []struct {
		name   string
		kubeIn string // variant holding kubelet's and kube-proxy's rules; "" none
		mode   string
		want   string
		reason string
	}{
		{"kube rules in legacy", "legacy", "auto", "legacy", "kubelet's KUBE-IPTABLES-HINT chain is in iptables-legacy's rules"},
		{"kube rules in nft", "nft", "auto", "nft", "kubelet's KUBE-IPTABLES-HINT chain is in iptables-nft's mangle table"},
		{"empty node", "", "auto", "nft", "no kubelet chain in either variant, and iptables-legacy holds no more rules than iptables-nft (0 against 0): the default"},
		{"flag nft over legacy kube rules", "legacy", "nft", "nft", "--iptables-mode=nft"},
		{"flag legacy over nft kube rules", "nft", "legacy", "legacy", "--iptables-mode=legacy"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ns := netfiltertest.NewNS(t)
			if tc.kubeIn != "" {
				netfiltertest.Restore(t, ns, "iptables-"+tc.kubeIn, netfiltertest.KubeNodeRules)
			}
			o := options(tc.mode)
			logs := startRules(t, ns, o, &config.NetConf{})

			other := map[string]string{"legacy": "nft", "nft": "legacy"}[tc.want]
			if got := sorted(netfiltertest.OwnChains(t, ns, "iptables-"+tc.want)); !slices.Equal(got, sorted(allOwn())) {
				t.Errorf("weft's chains in iptables-%s: %q, want %q", tc.want, got, allOwn())
			}
			if got := netfiltertest.OwnChains(t, ns, "iptables-"+other); len(got) != 0 {
				t.Errorf("weft's chains in iptables-%s: %q, want none", other, got)
			}
			var chosen []string
			for _, line := range strings.Split(logs, "\n") {
				if strings.Contains(line, `msg="iptables variant chosen"`) {
					chosen = append(chosen, line)
				}
			}
			wantLine := regexp.MustCompile(`^time=\S+ level=INFO msg="iptables variant chosen" component=netfilter binary=iptables-` +
				tc.want + ` iptables-mode=` + tc.mode + ` reason="?` + regexp.QuoteMeta(tc.reason) + `"?$`)
			if len(chosen) != 1 || !wantLine.MatchString(chosen[0]) {
				t.Errorf("the choice's log lines: %q, want one matching %s\nlog:\n%s", chosen, wantLine, logs)
			}
			if diffs := check(t, ns, o, &config.NetConf{}); len(diffs) != 0 {
				t.Errorf("weft status after weftd set the rules: %q, want nothing", diffs)
			}
		})
	}
}

// TestRulesMoveVariant: a node whose weft chains sit in iptables-nft (where
// weft put them before it detected the variant) while kube-proxy is in
// legacy. weft status names both problems and writes nothing; weftd moves
// the chains to legacy and says so.
func TestRulesMoveVariant(t *testing.T) {
	netfiltertest.RequireRoot(t, netfiltertest.VariantBinaries()...)
	ns := netfiltertest.NewNS(t)
	netfiltertest.Restore(t, ns, "iptables-legacy", netfiltertest.KubeNodeRules)
	run := netfiltertest.Runner(ns)
	old := iptables.NewManager(run, slog.New(slog.DiscardHandler), iptables.Choice{Variant: "nft"}.Options(), time.Hour)
	if err := old.Set(context.Background(), rulesCfg()); err != nil {
		t.Fatal(err)
	}
	o := options("auto")

	before := saves(t, ns)
	if !strings.Contains(before, "iptables-nft *nat -A FLANNEL-POSTRTG") {
		t.Fatalf("the listing does not show weft's chains in nft:\n%s", before)
	}
	diffs := check(t, ns, o, &config.NetConf{})
	for _, want := range []string{
		"iptables-legacy -t nat chain FLANNEL-POSTRTG: missing or different rules",
		"ip6tables-legacy -t filter chain FLANNEL-FWD: missing or different rules",
		"iptables-nft: weft's chains are there, but with --iptables-mode=auto they belong in iptables-legacy (kubelet's KUBE-IPTABLES-HINT chain is in iptables-legacy's rules)",
	} {
		if !slices.Contains(diffs, want) {
			t.Errorf("weft status does not report %q; it reports %q", want, diffs)
		}
	}
	if after := saves(t, ns); after != before {
		t.Errorf("weft status changed the rules:\nbefore\n%s\nafter\n%s", before, after)
	}

	logs := startRules(t, ns, o, &config.NetConf{})
	if got := netfiltertest.OwnChains(t, ns, "iptables-nft"); len(got) != 0 {
		t.Errorf("weft's chains left in iptables-nft: %q", got)
	}
	if got := sorted(netfiltertest.OwnChains(t, ns, "iptables-legacy")); !slices.Equal(got, sorted(allOwn())) {
		t.Errorf("weft's chains in iptables-legacy: %q, want %q", got, allOwn())
	}
	if !strings.Contains(logs, `msg="removing weft's chains from an iptables variant not in use" component=netfilter binary=iptables-nft`) {
		t.Errorf("weftd does not say it removed the stale chains:\n%s", logs)
	}
	if diffs := check(t, ns, o, &config.NetConf{}); len(diffs) != 0 {
		t.Errorf("weft status after the move: %q, want nothing", diffs)
	}
}

// TestRulesNFTablesMode: with EnableNFTables the iptables mode does not
// apply (weftd says so), and weft's chains in any iptables variant go.
func TestRulesNFTablesMode(t *testing.T) {
	netfiltertest.RequireRoot(t, append(netfiltertest.VariantBinaries(), "nft")...)
	ns := netfiltertest.NewNS(t)
	netfiltertest.Restore(t, ns, "iptables-legacy", netfiltertest.KubeNodeRules)
	run := netfiltertest.Runner(ns)
	old := iptables.NewManager(run, slog.New(slog.DiscardHandler), iptables.Choice{Variant: "legacy"}.Options(), time.Hour)
	if err := old.Set(context.Background(), rulesCfg()); err != nil {
		t.Fatal(err)
	}
	o, nc := options("legacy"), &config.NetConf{EnableNFTables: true}
	if diffs := check(t, ns, o, nc); !slices.Contains(diffs,
		"iptables-legacy: weft's chains are there, but with EnableNFTables the rules belong in nftables") {
		t.Errorf("weft status does not name the iptables chains: %q", diffs)
	}

	logs := startRules(t, ns, o, nc)
	if !strings.Contains(logs, `msg="iptables mode not used: net-conf.json's EnableNFTables puts the rules in nftables tables flannel-ipv4 and flannel-ipv6" component=netfilter iptables-mode=legacy`) ||
		strings.Contains(logs, "iptables variant chosen") {
		t.Errorf("weftd's log does not say the iptables mode is unused:\n%s", logs)
	}
	for _, v := range []string{"iptables-legacy", "iptables-nft"} {
		if got := netfiltertest.OwnChains(t, ns, v); len(got) != 0 {
			t.Errorf("weft's chains left in %s: %q", v, got)
		}
	}
	tables := netfiltertest.MustRun(t, "ip", "netns", "exec", ns, "nft", "list", "tables")
	if !strings.Contains(tables, "table ip flannel-ipv4") || !strings.Contains(tables, "table ip6 flannel-ipv6") {
		t.Errorf("nftables tables: %s", tables)
	}
	if diffs := check(t, ns, o, nc); len(diffs) != 0 {
		t.Errorf("weft status in nftables mode: %q, want nothing", diffs)
	}
}

// saves is both variants' rules and chains of both families in ns: the
// rules, the user chains and the built-in chains whose policy is not
// ACCEPT. (Listing a chain with iptables-legacy creates its table when it
// is missing, empty with ACCEPT policies: that changes no rule.)
func saves(t *testing.T, ns string) string {
	t.Helper()
	kept := regexp.MustCompile(`^(-A |:\S+ (-|DROP|REJECT) )`)
	var b strings.Builder
	for _, bin := range []string{"iptables-legacy", "ip6tables-legacy", "iptables-nft", "ip6tables-nft"} {
		table := ""
		for _, line := range strings.Split(netfiltertest.MustRun(t, "ip", "netns", "exec", ns, bin+"-save"), "\n") {
			if strings.HasPrefix(line, "*") {
				table = line
			}
			if kept.MatchString(line) {
				b.WriteString(bin + " " + table + " " + line + "\n")
			}
		}
	}
	return b.String()
}

// TestIPTablesModesAgree (plain): every mode the iptables package knows is
// a valid --iptables-mode, and a value it rejects is rejected at flag
// parsing, not when weftd first writes rules.
func TestIPTablesModesAgree(t *testing.T) {
	for _, m := range []iptables.Mode{iptables.ModeAuto, iptables.ModeLegacy, iptables.ModeNFT} {
		o, err := config.ParseOptions([]string{"--iptables-mode=" + string(m)}, func(string) (string, bool) { return "", false }, nil)
		if err != nil || o.IPTablesMode != string(m) {
			t.Errorf("--iptables-mode=%s: %q, %v", m, o.IPTablesMode, err)
		}
		if _, err := iptables.ParseMode(o.IPTablesMode); err != nil {
			t.Error(err)
		}
	}
	if _, err := iptables.ParseMode(config.Defaults().IPTablesMode); err != nil {
		t.Errorf("the default --iptables-mode: %v", err)
	}
	if m := iptablesMode(&config.Options{}); m != iptables.ModeAuto {
		t.Errorf("options without a mode: %q, want auto", m)
	}
	for _, bad := range []string{"nftables", "iptables-legacy", ""} {
		if _, err := config.ParseOptions([]string{"--iptables-mode=" + bad}, func(string) (string, bool) { return "", false }, nil); err == nil {
			t.Errorf("--iptables-mode=%q accepted", bad)
		}
	}
}
