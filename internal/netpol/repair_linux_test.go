package netpol

import (
	"context"
	"math/rand/v2"
	"regexp"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/testenv"
)

// tableBreak is a change to weft's table made by hand with nft, as an
// operator or another program might, and a probe whose verdict it turns
// round while it lasts.
type tableBreak struct {
	name   string
	broken probe
	do     func()
}

// testRepair breaks node n1's table, and holds the Syncer's Check to
// finding each break, rewriting the table and reporting the count, and the
// kernel's verdicts to Evaluate's again afterwards.
func testRepair(t *testing.T, d *dpNet) {
	var ps []*Policy
	for _, sc := range dpScenarios() {
		if sc.name == "pod-and-namespace-selectors" || sc.name == "egress-deny-dns-allow" {
			ps = append(ps, sc.policies...)
		}
	}
	d.setPolicies(t, ps...)
	probes := repairProbes(d)
	d.runProbes(t, probes)
	n := d.nodes[0]
	for _, b := range tableBreaks(t, d) {
		repairs := n.syncer.Stats().Repairs
		b.do()
		want, _ := d.verdict(t, b.broken)
		wait := deniedWait
		if !want {
			wait = testenv.Scale(t, 3*time.Second)
		}
		if got, err := b.broken.send(context.Background(), wait, !want); err != nil || got.connected == want {
			t.Errorf("%s: %v: the kernel %s it (%v): the break did not break what it should", b.name, b.broken, verdictWord(got.connected), err)
		}
		found, err := n.syncer.Check(context.Background())
		if err != nil {
			t.Fatalf("%s: check: %v", b.name, err)
		}
		if found != 1 || n.syncer.Stats().Repairs != repairs+1 {
			t.Errorf("%s: Check found %d differences (repairs %d -> %d), want 1", b.name, found, repairs, n.syncer.Stats().Repairs)
		}
		if again, err := n.syncer.Check(context.Background()); again != 0 || err != nil {
			t.Errorf("%s: a second Check found %d differences, %v", b.name, again, err)
		}
		t.Logf("%s: Check found %d difference and rewrote the table", b.name, found)
		d.runProbes(t, probes)
	}
}

// repairProbes are probes to and from the pods n1 polices, and a sample.
func repairProbes(d *dpNet) []probe {
	var probes []probe
	for _, src := range d.pods {
		for _, dst := range []string{"x/a", "x/b"} {
			if src != d.pod(dst) {
				probes = append(probes, probe{src: src, dst: d.pod(dst), fam: 4, proto: protoTCP, port: 81})
			}
		}
		if src != d.pod("z/a") {
			probes = append(probes, probe{src: d.pod("z/a"), dst: src, fam: 4, proto: protoUDP, port: 53})
		}
	}
	return append(probes, d.randomProbes(rand.New(rand.NewPCG(1, 2)), 12)...)
}

// tableBreaks returns the breaks of n1's table: a rule of x/sel's ingress
// chain deleted (its first, which accepts from its first peers, x/b's
// address: that denies x/b -> x/a), a rule accepting everything put first
// in that chain (that allows x/c -> x/a), and the table deleted (that
// allows z/b -> x/a).
func tableBreaks(t *testing.T, d *dpNet) []tableBreak {
	n := d.nodes[0]
	chain := Ingress.short() + "-" + hash("x/sel")
	if n.rs.Chains[chain] == nil {
		t.Fatalf("n1's ruleset has no chain %s", chain)
	}
	fromB := probe{src: d.pod("x/b"), dst: d.pod("x/a"), fam: 4, proto: protoTCP, port: 81}
	fromC := probe{src: d.pod("x/c"), dst: d.pod("x/a"), fam: 4, proto: protoTCP, port: 81}
	fromZ := probe{src: d.pod("z/b"), dst: d.pod("x/a"), fam: 4, proto: protoTCP, port: 81}
	return []tableBreak{
		{"delete a rule of " + chain, fromB, func() {
			// The first rule's line: "<rule> # handle N" (the chain's
			// own line ends "{ # handle N").
			listing := n.kernel.nft(t, "-a", "list", "chain", "inet", TableName, chain)
			handle := regexp.MustCompile(`(?m)^\s+[^{}\n]+ # handle (\d+)$`).FindStringSubmatch(listing)
			if handle == nil {
				t.Fatalf("no rule handle in chain %s:\n%s", chain, listing)
			}
			n.kernel.nft(t, "delete", "rule", "inet", TableName, chain, "handle", handle[1])
		}},
		{"an accept put first in " + chain, fromC, func() { n.kernel.nft(t, "insert", "rule", "inet", TableName, chain, "accept") }},
		{"delete the table", fromZ, func() { n.kernel.nft(t, "delete", "table", "inet", TableName) }},
	}
}
