// Package nftables is weft's nftables mode (net-conf.json EnableNFTables):
// it renders netfilter's rules as the tables flannel-ipv4 (family ip) and
// flannel-ipv6 (family ip6), each with the chains postrtg (type nat, hook
// postrouting, priority srcnat) and forward (type filter, hook forward,
// priority filter), by running the real nft binary through an injected
// netfilter.Runner.
//
// The chains hold the same rules, in the same order, as iptables mode
// (flannel's own nftables rules differ and leave one rule unreachable).
//
// Each Apply lists weft's table with `nft list table` and, only when it
// differs from the desired one, replaces the whole table in a single
// `nft -f -` transaction ("add table; delete table; table { ... }"), so
// packets never see a half-written table. Nothing but weft's two tables is
// ever written; other tables, including iptables-nft's, are never touched.
//
// nft rather than knftables: the same injected Runner serves both modes, so
// the namespace tests run identical code paths through `ip netns exec`, the
// golden tests compare against the very text nft prints, and no new module
// is needed.
package nftables

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/weft-net/weft/internal/netfilter"
)

// Table and chain names, flannel's, so an upgraded node's tables are
// recognised and replaced.
const (
	TablePrefix  = "flannel-"
	MasqChain    = "postrtg"
	ForwardChain = "forward"
)

// TableName returns weft's table of family f: flannel-ipv4 or flannel-ipv6.
func TableName(f netfilter.Family) string { return TablePrefix + f.String() }

// NFTFamily returns the nftables family of f: ip or ip6.
func NFTFamily(f netfilter.Family) string {
	if f == netfilter.IPv6 {
		return "ip6"
	}
	return "ip"
}

// Backend implements netfilter.Backend with nft.
type Backend struct {
	run netfilter.Runner
	log *slog.Logger

	// Apply is never concurrent (netfilter.Backend), so this needs no lock.
	settled map[string][]string // rendered table -> its listing right after we wrote it
}

var _ netfilter.Backend = (*Backend)(nil)

// New returns the nftables backend.
func New(run netfilter.Runner, log *slog.Logger) *Backend {
	return &Backend{run: run, log: log, settled: map[string][]string{}}
}

// NewManager returns the daemon's Manager in nftables mode.
func NewManager(run netfilter.Runner, log *slog.Logger, resync time.Duration) *netfilter.Syncer {
	return netfilter.NewSyncer(New(run, log), log, resync)
}

// Apply implements netfilter.Backend.
func (b *Backend) Apply(ctx context.Context, want netfilter.FamilyRules) (bool, error) {
	fam, table := NFTFamily(want.Family), TableName(want.Family)
	have, exists, err := b.list(ctx, fam, table)
	if err != nil {
		return false, err
	}
	if want.Empty() {
		if !exists {
			return false, nil
		}
		if _, err := b.run.Run(ctx, nil, "nft", "delete", "table", fam, table); err != nil {
			return false, fmt.Errorf("delete table %s %s: %w", fam, table, err)
		}
		return true, nil
	}
	rendered := Render(want)
	wantLines := normalize(rendered)
	settled, wrote := b.settled[rendered]
	if exists && (slices.Equal(wantLines, have) || wrote && slices.Equal(settled, have)) {
		return false, nil
	}
	// "add" makes the "delete" valid when the table is absent; all three
	// commands are one transaction.
	script := fmt.Sprintf("add table %s %s\ndelete table %s %s\n%s", fam, table, fam, table, rendered)
	if _, err := b.run.Run(ctx, []byte(script), "nft", "-f", "-"); err != nil {
		return false, fmt.Errorf("write table %s %s: %w", fam, table, err)
	}
	if after, ok, err := b.list(ctx, fam, table); err == nil && ok {
		if !slices.Equal(after, wantLines) {
			b.log.Debug("nft lists weft's table differently from how it was written",
				"table", table, "written", wantLines, "listed", after)
		}
		b.settled[rendered] = after
	}
	return true, nil
}

// Check implements netfilter.Checker.
func (b *Backend) Check(ctx context.Context, want netfilter.FamilyRules) ([]string, error) {
	fam, table := NFTFamily(want.Family), TableName(want.Family)
	have, exists, err := b.list(ctx, fam, table)
	if err != nil {
		return nil, err
	}
	where := "nft table " + fam + " " + table
	switch {
	case want.Empty() && exists:
		return []string{where + ": present, not wanted"}, nil
	case want.Empty():
		return nil, nil
	case !exists:
		return []string{where + ": missing"}, nil
	case !slices.Equal(normalize(Render(want)), have):
		return []string{where + ": different rules"}, nil
	}
	return nil, nil
}

// list returns the normalized listing of table and whether it exists.
func (b *Backend) list(ctx context.Context, fam, table string) ([]string, bool, error) {
	out, err := b.run.Run(ctx, nil, "nft", "list", "tables", fam)
	if err != nil {
		return nil, false, fmt.Errorf("list nftables tables: %w", err)
	}
	if !slices.Contains(normalize(string(out)), "table "+fam+" "+table) {
		return nil, false, nil
	}
	out, err = b.run.Run(ctx, nil, "nft", "list", "table", fam, table)
	if err != nil {
		return nil, false, fmt.Errorf("list table %s %s: %w", fam, table, err)
	}
	return normalize(string(out)), true, nil
}

// normalize trims every line and drops empty ones, so the comparison
// ignores indentation and blank lines between chains.
func normalize(s string) []string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}
