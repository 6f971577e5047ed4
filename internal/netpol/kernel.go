package netpol

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"sigs.k8s.io/knftables"
)

// Kernel is the syncer's side of nftables: transactions on weft's table, and
// a census of what the table holds. The real one runs nft in the caller's
// network namespace; FakeKernel keeps the table in memory. The same cases
// run on both (kernel_test.go).
type Kernel interface {
	// NewTransaction returns an empty transaction on weft's table.
	NewTransaction() *knftables.Transaction
	// Run commits tx atomically: all of it or, with an error, none.
	Run(ctx context.Context, tx *knftables.Transaction) error
	// Census lists the table; a table that does not exist gives a Census
	// with Table false and no error.
	Census(ctx context.Context) (*Census, error)
}

// Census is what weft's table holds, counted.
type Census struct {
	Table bool
	// Rules counts the rules of each chain, base chains included.
	Rules map[string]int
	// Elements counts the elements of each named set and map (weft's table
	// has none: its sets are inside its rules), and Maps says which of them
	// are maps.
	Elements map[string]int
	Maps     map[string]bool
	// Inline counts the elements of the sets and maps inside rules, and
	// Addresses those of the verdict maps inside the base chains: the pod
	// addresses a policy selects.
	Inline, Addresses int
	// Counters holds each named counter's packets.
	Counters map[string]uint64
}

func newCensus() *Census {
	return &Census{Rules: map[string]int{}, Elements: map[string]int{}, Maps: map[string]bool{}, Counters: map[string]uint64{}}
}

// errNoNFTables wraps the cause when the kernel or the nft binary cannot take
// weft's table.
var errNoNFTables = errors.New("nftables is not usable")

// NFTKernel is the real Kernel.
type NFTKernel struct {
	knftables.Interface
	nft string
}

// NewKernel returns the real Kernel. It fails, wrapping the cause, when the
// nft binary is missing or the kernel has no nf_tables inet family.
func NewKernel() (*NFTKernel, error) {
	nft, err := exec.LookPath("nft")
	if err != nil {
		return nil, fmt.Errorf("%w: the nft binary: %w", errNoNFTables, err)
	}
	iface, err := knftables.New(knftables.InetFamily, TableName)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNoNFTables, err)
	}
	return &NFTKernel{Interface: iface, nft: nft}, nil
}

// Census implements Kernel with one `nft -j list table`.
func (k *NFTKernel) Census(ctx context.Context) (*Census, error) {
	out, err := exec.CommandContext(ctx, k.nft, "-j", "list", "table", "inet", TableName).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && strings.Contains(string(ee.Stderr), "No such file or directory") {
			return newCensus(), nil
		}
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("nft list table inet %s: %w: %s", TableName, err, strings.TrimSpace(string(ee.Stderr)))
		}
		return nil, fmt.Errorf("nft list table inet %s: %w", TableName, err)
	}
	return parseCensus(out)
}

// parseCensus counts the objects of `nft -j list table` output.
func parseCensus(out []byte) (*Census, error) {
	var doc struct {
		NFTables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("parse nft's json listing: %w", err)
	}
	c := newCensus()
	for _, obj := range doc.NFTables {
		for kind, raw := range obj {
			var o struct {
				Name    string            `json:"name"`
				Chain   string            `json:"chain"`
				Elem    []json.RawMessage `json:"elem"`
				Packets uint64            `json:"packets"`
				Expr    any               `json:"expr"`
			}
			if err := json.Unmarshal(raw, &o); err != nil {
				return nil, fmt.Errorf("parse nft's json listing: %s: %w", kind, err)
			}
			switch kind {
			case "table":
				c.Table = true
			case "chain":
				c.Rules[o.Name] += 0
			case "rule":
				c.Rules[o.Chain]++
				elems, vmap := inlineElements(o.Expr, false)
				c.Inline += elems
				if o.Chain == ingressChain || o.Chain == egressChain {
					c.Addresses += vmap
				}
			case "set", "map":
				c.Elements[o.Name] = len(o.Elem)
				c.Maps[o.Name] = kind == "map"
			case "counter":
				c.Counters[o.Name] = o.Packets
			}
		}
	}
	return c, nil
}

// inlineElements counts the elements of the anonymous sets in a rule's JSON
// expression ({"set": [...]}), and of those inside a verdict map.
func inlineElements(v any, inVmap bool) (elems, vmap int) {
	switch v := v.(type) {
	case []any:
		for _, e := range v {
			a, b := inlineElements(e, inVmap)
			elems, vmap = elems+a, vmap+b
		}
	case map[string]any:
		for k, e := range v {
			if set, ok := e.([]any); ok && k == "set" {
				elems += len(set)
				if inVmap {
					vmap += len(set)
				}
				continue
			}
			a, b := inlineElements(e, inVmap || k == "vmap")
			elems, vmap = elems+a, vmap+b
		}
	}
	return elems, vmap
}

// FakeKernel is a Kernel in memory, over knftables' fake.
type FakeKernel struct {
	*knftables.Fake
}

// NewFakeKernel returns an empty FakeKernel.
func NewFakeKernel() *FakeKernel {
	return &FakeKernel{knftables.NewFake(knftables.InetFamily, TableName)}
}

// Census implements Kernel. The fake counts no packets.
func (f *FakeKernel) Census(context.Context) (*Census, error) {
	c := newCensus()
	t := f.Table
	if t == nil {
		return c, nil
	}
	c.Table = true
	for name, ch := range t.Chains {
		c.Rules[name] = len(ch.Rules)
		for _, r := range ch.Rules {
			elems, vmap := textElements(r.Rule)
			c.Inline += elems
			if name == ingressChain || name == egressChain {
				c.Addresses += vmap
			}
		}
	}
	for name, s := range t.Sets {
		c.Elements[name] = len(s.Elements)
	}
	for name, m := range t.Maps {
		c.Elements[name] = len(m.Elements)
		c.Maps[name] = true
	}
	for name := range t.Counters {
		c.Counters[name] = 0
	}
	return c, nil
}

// textElements counts the elements of the anonymous sets in a rule's text
// ("{ a, b }"), and of those of a verdict map ("vmap { a : goto c }").
func textElements(rule string) (elems, vmap int) {
	for rest := rule; ; {
		open := strings.Index(rest, "{ ")
		if open < 0 {
			return elems, vmap
		}
		end := strings.Index(rest[open:], " }")
		if end < 0 {
			return elems, vmap
		}
		n := strings.Count(rest[open:open+end], ",") + 1
		elems += n
		if strings.HasSuffix(rest[:open], "vmap ") {
			vmap += n
		}
		rest = rest[open+end:]
	}
}
