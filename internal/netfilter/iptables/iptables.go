// Package iptables is weft's iptables mode: it renders netfilter's rules as
// the flannel-compatible chains FLANNEL-POSTRTG (nat, jumped to from
// POSTROUTING with comment "flanneld masq") and FLANNEL-FWD (filter, jumped to
// from FORWARD with comment "flanneld forward"), and keeps them in place by
// running the real iptables and iptables-restore binaries (ip6tables for
// IPv6) through an injected netfilter.Runner.
//
// Each Apply lists weft's two chains and their parents with `iptables -S`,
// and, only when something differs, writes one `iptables-restore --noflush`
// script: a differing chain is redeclared (which flushes it) and refilled,
// a missing jump is inserted at the top of its parent, and only then are
// stale or duplicate jumps deleted. The script is committed atomically per
// table, so packets never see a half-written chain. Nothing but weft's
// chains and the jumps to them is ever written.
package iptables

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/weft-net/weft/internal/netfilter"
)

// Chain and comment names, flannel's, so rules of an upgraded flannel node
// are recognised and replaced.
const (
	MasqChain      = "FLANNEL-POSTRTG"
	ForwardChain   = "FLANNEL-FWD"
	MasqComment    = "flanneld masq"
	ForwardComment = "flanneld forward"
)

// Options selects the binaries. The zero value uses "iptables" and
// "ip6tables" (whatever the system's alternatives point to); set e.g.
// "iptables-legacy" to force a variant. The restore binary is the name with
// "-restore" appended.
type Options struct {
	IPTables  string
	IP6Tables string
}

// Backend implements netfilter.Backend with iptables.
type Backend struct {
	run  netfilter.Runner
	log  *slog.Logger
	opts Options

	// Apply is never concurrent (netfilter.Backend), so these need no lock.
	random  map[netfilter.Family]bool // --random-fully supported, once known
	settled map[string][]string       // rendered chain -> its listing right after we wrote it
}

var _ netfilter.Backend = (*Backend)(nil)

// New returns the iptables backend.
func New(run netfilter.Runner, log *slog.Logger, opts Options) *Backend {
	if opts.IPTables == "" {
		opts.IPTables = "iptables"
	}
	if opts.IP6Tables == "" {
		opts.IP6Tables = "ip6tables"
	}
	return &Backend{run: run, log: log, opts: opts,
		random: map[netfilter.Family]bool{}, settled: map[string][]string{}}
}

// NewManager returns the daemon's Manager in iptables mode.
func NewManager(run netfilter.Runner, log *slog.Logger, opts Options, resync time.Duration) *netfilter.Syncer {
	return netfilter.NewSyncer(New(run, log, opts), log, resync)
}

// chain is one of weft's chains and where it is jumped to from.
type chain struct {
	table, parent, name, comment string
}

func masqChain() chain    { return chain{"nat", "POSTROUTING", MasqChain, MasqComment} }
func forwardChain() chain { return chain{"filter", "FORWARD", ForwardChain, ForwardComment} }

// jump is the rule in the parent chain, as `iptables -S` prints it.
func (c chain) jump() string {
	return fmt.Sprintf("-A %s -m comment --comment %q -j %s", c.parent, c.comment, c.name)
}

func (b *Backend) binary(f netfilter.Family) string {
	if f == netfilter.IPv6 {
		return b.opts.IP6Tables
	}
	return b.opts.IPTables
}

// chainRules is one of weft's chains and the rules it should hold.
type chainRules struct {
	chain
	rules []netfilter.Rule
}

// wanted returns the binary for want's family and weft's two chains with
// their rules (masquerade without --random-fully where the binary lacks it).
func (b *Backend) wanted(ctx context.Context, want netfilter.FamilyRules) (string, []chainRules) {
	bin := b.binary(want.Family)
	masq := want.Masq
	if len(masq) > 0 && !b.fullyRandom(ctx, bin, want.Family) {
		masq = withoutFullyRandom(masq)
	}
	return bin, []chainRules{{masqChain(), masq}, {forwardChain(), want.Forward}}
}

// Apply implements netfilter.Backend.
func (b *Backend) Apply(ctx context.Context, want netfilter.FamilyRules) (bool, error) {
	bin, chains := b.wanted(ctx, want)
	var script strings.Builder
	var written []plan
	for _, c := range chains {
		p, err := b.plan(ctx, bin, c.chain, c.rules)
		if err != nil {
			return false, err
		}
		if len(p.lines) > 0 {
			fmt.Fprintf(&script, "*%s\n%s\nCOMMIT\n", c.table, strings.Join(p.lines, "\n"))
			written = append(written, p)
		}
	}
	if script.Len() == 0 {
		return false, nil
	}
	if _, err := b.run.Run(ctx, []byte(script.String()), bin+"-restore", "-w", "5", "--noflush"); err != nil {
		return false, fmt.Errorf("write %s/%s: %w", masqChain().name, forwardChain().name, err)
	}
	b.settle(ctx, bin, written)
	return true, nil
}

// Check implements netfilter.Checker: each chain that is missing, differs,
// or lacks its jump, named.
func (b *Backend) Check(ctx context.Context, want netfilter.FamilyRules) ([]string, error) {
	bin, chains := b.wanted(ctx, want)
	var out []string
	for _, c := range chains {
		p, err := b.plan(ctx, bin, c.chain, c.rules)
		if err != nil {
			return nil, err
		}
		where := fmt.Sprintf("%s -t %s chain %s", bin, c.table, c.name)
		for _, l := range p.lines {
			switch {
			case len(c.rules) == 0:
				out = append(out, where+": present, not wanted")
			case strings.HasPrefix(l, ":"):
				out = append(out, where+": missing or different rules")
			case strings.HasPrefix(l, "-I "):
				out = append(out, where+": no jump from "+c.parent)
			case strings.HasPrefix(l, "-D "):
				out = append(out, where+": an extra jump from "+c.parent)
			}
		}
	}
	return slices.Compact(out), nil
}

// plan is what one chain needs: the restore lines for its table (empty when
// it is in place) and, if the chain is rewritten, its rendered rules.
type plan struct {
	chain
	lines   []string
	rewrite []string
}

// plan compares one chain and its jumps with rules (absent when empty).
func (b *Backend) plan(ctx context.Context, bin string, c chain, rules []netfilter.Rule) (plan, error) {
	have, exists, err := b.listChain(ctx, bin, c.table, c.name)
	if err != nil {
		return plan{}, err
	}
	parent, _, err := b.listChain(ctx, bin, c.table, c.parent)
	if err != nil {
		return plan{}, err
	}
	jumps := jumpsTo(parent, c.name)
	p := plan{chain: c}
	if len(rules) == 0 {
		for _, j := range jumps {
			p.lines = append(p.lines, "-D"+strings.TrimPrefix(j, "-A"))
		}
		if exists {
			p.lines = append(p.lines, "-F "+c.name, "-X "+c.name)
		}
		return p, nil
	}
	want := Render(c.name, rules)
	if !exists || !b.same(bin, c, want, have) {
		p.rewrite = want
		p.lines = append(append(p.lines, ":"+c.name+" - [0:0]"), want...)
	}
	// Add before delete: insert the missing jump, then drop the extra ones.
	var stale []string
	kept := false
	for _, j := range jumps {
		if j == c.jump() && !kept {
			kept = true
			continue
		}
		stale = append(stale, "-D"+strings.TrimPrefix(j, "-A"))
	}
	if !kept {
		p.lines = append(p.lines, "-I "+c.parent+" 1"+strings.TrimPrefix(c.jump(), "-A "+c.parent))
	}
	p.lines = append(p.lines, stale...)
	return p, nil
}

// same reports whether the listed rules are the rendered ones, or what the
// binary printed right after we wrote them (another version may print a
// rule differently; that must not make every resync rewrite the chain).
func (b *Backend) same(bin string, c chain, want, have []string) bool {
	if slices.Equal(want, have) {
		return true
	}
	// Only a listing recorded after a write counts: a missing entry is nil,
	// and so is an emptied chain's listing.
	settled, ok := b.settled[settleKey(bin, c, want)]
	return ok && slices.Equal(settled, have)
}

func settleKey(bin string, c chain, want []string) string {
	return bin + "\x00" + c.table + "\x00" + strings.Join(want, "\n")
}

// settle records the listing of each rewritten chain.
func (b *Backend) settle(ctx context.Context, bin string, written []plan) {
	for _, p := range written {
		if p.rewrite == nil {
			continue
		}
		have, _, err := b.listChain(ctx, bin, p.table, p.name)
		if err != nil {
			continue
		}
		if !slices.Equal(have, p.rewrite) {
			b.log.Debug("iptables lists weft's rules differently from how they were written",
				"chain", p.name, "written", p.rewrite, "listed", have)
		}
		b.settled[settleKey(bin, p.chain, p.rewrite)] = have
	}
}

// listChain returns the "-A" lines of `iptables -t table -S name`, and
// whether the chain exists (iptables exits 1 when it does not).
func (b *Backend) listChain(ctx context.Context, bin, table, name string) ([]string, bool, error) {
	out, err := b.run.Run(ctx, nil, bin, "-w", "5", "-t", table, "-S", name)
	if err != nil {
		if netfilter.ExitCode(err) == 1 {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("list %s chain %s: %w", table, name, err)
	}
	var rules []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "-A ") {
			rules = append(rules, strings.TrimSpace(line))
		}
	}
	return rules, true, nil
}

// jumpsTo returns the rules among lines that jump or go to chain name.
func jumpsTo(lines []string, name string) []string {
	var out []string
	for _, line := range lines {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if (f[i] == "-j" || f[i] == "-g") && f[i+1] == name {
				out = append(out, line)
				break
			}
		}
	}
	return out
}
