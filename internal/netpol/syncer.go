package netpol

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"

	"sigs.k8s.io/knftables"
)

// Conntrack cuts tracked connections. The real one is netlinkx's.
type Conntrack interface {
	// DeleteConnections deletes the connections match returns true for
	// (given each one's first packet) and returns how many.
	DeleteConnections(match func(Packet) bool) (int, error)
}

// Syncer writes Rulesets to the kernel. Its methods are not concurrent: one
// goroutine (the Controller's) calls them.
type Syncer struct {
	k   Kernel
	ct  Conntrack // nil: connections are not cut
	log *slog.Logger
	// last is what the kernel holds as far as the syncer knows; nil until
	// the first write succeeds, and again after a write fails.
	last *Ruleset
	// Counters are the packets of each drop counter, as of the last Check.
	counters map[string]uint64
	stats    SyncStats
}

// SyncStats count what the syncer did.
type SyncStats struct {
	Writes     uint64 // transactions committed
	FullWrites uint64 // of which wrote the whole table
	Failures   uint64 // transactions the kernel refused
	Repairs    uint64 // objects found differing from what weft wrote, and rewritten
	Cut        uint64 // tracked connections deleted because a change denies them
}

// NewSyncer returns a Syncer over k; ct may be nil.
func NewSyncer(k Kernel, ct Conntrack, log *slog.Logger) *Syncer {
	return &Syncer{k: k, ct: ct, log: log, counters: map[string]uint64{}}
}

// Stats returns what the syncer has done.
func (s *Syncer) Stats() SyncStats { return s.stats }

// Drops returns the packets counted on each drop counter at the last Check.
func (s *Syncer) Drops() map[string]uint64 { return s.counters }

// Apply makes the kernel hold rs: the differences from the Ruleset written
// before, in one transaction (the whole table when nothing was written yet,
// or when the kernel refused the differences). Then it cuts the tracked
// connections of this node's pods that rs denies.
func (s *Syncer) Apply(ctx context.Context, rs *Ruleset) error {
	prev := s.last
	if prev == nil {
		if err := s.writeAll(ctx, rs); err != nil {
			return err
		}
	} else {
		if rs.rendered == nil {
			rs.rendered = render(rs, prev)
		}
		tx := s.k.NewTransaction()
		writeChanges(tx, prev, rs)
		if tx.NumOperations() == 0 {
			return nil
		}
		if err := s.run(ctx, tx); err != nil {
			s.log.Warn("nftables refused the policy changes; writing the whole table", "error", err)
			if err := s.writeAll(ctx, rs); err != nil {
				return err
			}
		}
	}
	s.last = rs
	s.cut(prev, rs)
	return nil
}

func (s *Syncer) run(ctx context.Context, tx *knftables.Transaction) error {
	if err := s.k.Run(ctx, tx); err != nil {
		s.stats.Failures++
		return err
	}
	s.stats.Writes++
	return nil
}

// writeAll replaces the table's contents with rs in one transaction.
func (s *Syncer) writeAll(ctx context.Context, rs *Ruleset) error {
	s.last = nil
	c, err := s.k.Census(ctx)
	if err != nil {
		return fmt.Errorf("list nftables table %s: %w", TableName, err)
	}
	tx := s.k.NewTransaction()
	writeAll(tx, rs, c.names())
	if err := s.run(ctx, tx); err != nil {
		return fmt.Errorf("write nftables table %s: %w", TableName, err)
	}
	s.stats.FullWrites++
	s.last = rs
	return nil
}

// cut deletes the tracked connections that rs denies among those whose
// verdict the change from prev may have turned: connections to or from a
// pod whose policies' chains changed (or, at the first write, any pod rs
// polices). A change that turns no verdict walks no conntrack table.
func (s *Syncer) cut(prev, rs *Ruleset) {
	if s.ct == nil {
		return
	}
	pods := affectedPods(prev, rs)
	if len(pods) == 0 {
		return
	}
	n, err := s.ct.DeleteConnections(func(p Packet) bool {
		return (pods[p.Src] || pods[p.Dst]) && !rs.Evaluate(p)
	})
	s.stats.Cut += uint64(n)
	if err != nil {
		s.log.Warn("could not cut the connections the policies now deny", "error", err)
	} else if n > 0 {
		s.log.Info("cut tracked connections the policies now deny", "connections", n)
	}
}

// affectedPods returns the addresses of the pods rs polices whose verdicts
// may differ from prev's: a pod mapped to another chain than in prev, or to
// a chain whose rules, or those of a chain it jumps to, differ; every pod
// rs polices when prev is nil. A pod no longer policed is left out: rs
// allows everything its policies did.
func affectedPods(prev, rs *Ruleset) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	if prev == nil {
		for _, pods := range rs.Pods {
			for a := range pods {
				out[a] = true
			}
		}
		return out
	}
	before, after := rendered(prev), rendered(rs)
	differs := func(chain string) bool {
		old, ok := before[chain]
		return !ok || !slices.Equal(old, after[chain])
	}
	// A pod chain's verdicts may differ when it or a chain it leads to
	// (a policy's, directly or through a dispatch and a via- chain) does.
	var leadsToChange func(chain string, depth int) bool
	leadsToChange = func(chain string, depth int) bool {
		if differs(chain) {
			return true
		}
		c := rs.Chains[chain]
		if c == nil || depth > 4 {
			return false
		}
		for _, r := range c.Rules {
			if r.Jump != "" && leadsToChange(r.Jump, depth+1) {
				return true
			}
			for _, e := range r.Dispatch {
				if leadsToChange(e.Chain, depth+1) {
					return true
				}
			}
		}
		return false
	}
	touched := map[string]bool{} // pod chains whose verdicts may differ
	for name := range rs.Chains {
		if strings.HasPrefix(name, "pods-") {
			touched[name] = leadsToChange(name, 0)
		}
	}
	for d, pods := range rs.Pods {
		for a, chain := range pods {
			if prev.Pods[d][a] != chain || touched[chain] {
				out[a] = true
			}
		}
	}
	return out
}

// Check compares the kernel's table with what the syncer wrote and
// rewrites it when they differ (someone else changed it), returning the
// number of objects that differed. It also reads the drop counters.
func (s *Syncer) Check(ctx context.Context) (int, error) {
	if s.last == nil {
		return 0, nil
	}
	c, err := s.k.Census(ctx)
	if err != nil {
		return 0, fmt.Errorf("list nftables table %s: %w", TableName, err)
	}
	s.counters = c.Counters
	diffs := expectedCensus(s.last).differences(c)
	if len(diffs) == 0 {
		return 0, nil
	}
	s.log.Warn("the NetworkPolicy table differs from what weft wrote; rewriting it", "objects", len(diffs), "first", diffs[0])
	s.stats.Repairs += uint64(len(diffs))
	rs := s.last
	if err := s.writeAll(ctx, rs); err != nil {
		return len(diffs), err
	}
	return len(diffs), nil
}

// expectedCensus is the Census of a table holding rs: its chains and
// their rules, its counters, and no named set or map.
func expectedCensus(rs *Ruleset) *Census {
	c := newCensus()
	c.Table = true
	for name, rules := range rendered(rs) {
		c.Rules[name] = len(rules)
	}
	for name := range rs.Counters {
		c.Counters[name] = 0
	}
	return c
}

// differences describes each object whose presence or size differs
// between want and have.
func (want *Census) differences(have *Census) []string {
	if !have.Table {
		return []string{"table inet " + TableName + " is missing"}
	}
	var out []string
	cmp := func(kind string, w, h map[string]int) {
		for _, name := range sortedKeys(w) {
			if n, ok := h[name]; !ok {
				out = append(out, fmt.Sprintf("%s %s is missing", kind, name))
			} else if n != w[name] {
				out = append(out, fmt.Sprintf("%s %s has %d entries, not %d", kind, name, n, w[name]))
			}
		}
		for _, name := range sortedKeys(h) {
			if _, ok := w[name]; !ok {
				out = append(out, fmt.Sprintf("%s %s is not weft's", kind, name))
			}
		}
	}
	cmp("chain", want.Rules, have.Rules)
	cmp("set or map", want.Elements, have.Elements) // weft's table has none: its sets are inside its rules
	for _, name := range sortedKeys(want.Counters) {
		if _, ok := have.Counters[name]; !ok {
			out = append(out, fmt.Sprintf("counter %s is missing", name))
		}
	}
	return out
}

// names returns the census's objects by kind ("chain", "set", "map",
// "counter"), for a full write to delete those no longer wanted.
func (c *Census) names() map[string][]string {
	out := map[string][]string{"chain": sortedKeys(c.Rules), "counter": sortedKeys(c.Counters)}
	for _, name := range sortedKeys(c.Elements) {
		kind := "set"
		if c.Maps[name] {
			kind = "map"
		}
		out[kind] = append(out[kind], name)
	}
	return out
}

// RemoveTable deletes weft's table if the kernel holds it, and reports
// whether it did.
func RemoveTable(ctx context.Context, k Kernel) (bool, error) {
	c, err := k.Census(ctx)
	if err != nil || !c.Table {
		return false, err
	}
	tx := k.NewTransaction()
	tx.Delete(&knftables.Table{})
	if err := k.Run(ctx, tx); err != nil {
		return false, fmt.Errorf("delete nftables table inet %s: %w", TableName, err)
	}
	return true, nil
}
