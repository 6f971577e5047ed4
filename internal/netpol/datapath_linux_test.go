package netpol

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/testenv"
)

// The datapath tests send real packets between pod namespaces of two
// node namespaces (topology_linux_test.go) through the table each node's
// Syncer writes, and hold the kernel to Evaluate: for every probe, the
// kernel's verdict (connected or not) must be Evaluate's, and every denied
// probe's one packet must show on the drop counters of the policies that
// denied it, and no other packet on any drop counter.

// SeedEnv names the variable that replays a run of the generated cases.
const seedEnv = "WEFT_NETPOL_SEED"

func TestDatapath(t *testing.T) {
	start := time.Now()
	d := newDPNet(t)
	t.Logf("topology: 2 nodes, %d pods, SCTP %v, built in %v", len(d.pods), d.sctp, time.Since(start).Round(time.Millisecond))
	t.Run("matrix", func(t *testing.T) { testMatrix(t, d) })
	t.Run("established", func(t *testing.T) { testEstablished(t, d) })
	t.Run("ping-flow", func(t *testing.T) { testPingFlow(t, d) })
	t.Run("repair", func(t *testing.T) { testRepair(t, d) })
}

// setPolicies makes ps the cluster's only policies and applies them.
func (d *dpNet) setPolicies(t *testing.T, ps ...*Policy) {
	t.Helper()
	d.c.Policies = map[string]*Policy{}
	for _, p := range ps {
		d.c.Policies[p.Key()] = p
	}
	d.apply(t)
}

func testMatrix(t *testing.T, d *dpNet) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv(seedEnv); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("%s=%q: want a number", seedEnv, v)
		}
	}
	t.Logf("seed %d (%s=%d replays it)", seed, seedEnv, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	perScenario, randomRuns := 40, 6
	if testenv.TimeFactor(t) > 1 {
		perScenario, randomRuns = 16, 2
	}
	var total probeTally
	t.Run("sctp", func(t *testing.T) {
		if !d.sctp {
			t.Skip("this kernel makes no SCTP sockets (no CONFIG_IP_SCTP, or no sctp module): no SCTP probes in the matrix")
		}
		// Every pod to x/c's SCTP ports, which take SCTP from namespace z
		// only, and to y/c's, which take ports 80-81 from anyone; besides
		// the SCTP probes the other scenarios draw.
		var ps []*Policy
		for _, sc := range dpScenarios() {
			if sc.name == "endport" || sc.name == "protocol-only-and-union" {
				ps = append(ps, sc.policies...)
			}
		}
		d.setPolicies(t, ps...)
		var probes []probe
		for i, src := range d.pods {
			for _, dst := range []*dpPod{d.pod("x/c"), d.pod("y/c")} {
				if src != dst {
					port := servedPorts()[SCTP][i%2]
					probes = append(probes, probe{src: src, dst: dst, fam: Family(4 + 2*(i%2)), proto: protoSCTP, port: port})
				}
			}
		}
		total.add(d.runProbes(t, probes))
	})
	run := func(name string, ps []*Policy, spots []dpSpot) {
		t.Run(name, func(t *testing.T) {
			d.setPolicies(t, ps...)
			probes := d.spotProbes(t, spots)
			probes = append(probes, d.randomProbes(rng, perScenario)...)
			total.add(d.runProbes(t, probes))
		})
	}
	for _, sc := range dpScenarios() {
		run(sc.name, sc.policies, sc.want)
	}
	for i := range randomRuns {
		run(fmt.Sprintf("random-%d", i), policyGen{rng}.policies(2+rng.IntN(3)), nil)
	}
	t.Logf("%s", &total)
}

// spotProbes checks a scenario's verdicts against Evaluate and returns them
// as probes (SCTP ones only when the kernel has SCTP).
func (d *dpNet) spotProbes(t *testing.T, spots []dpSpot) []probe {
	t.Helper()
	var out []probe
	for _, s := range spots {
		p := probe{src: d.pod(s.src), dst: d.pod(s.dst), fam: s.fam, proto: s.proto, port: s.port}
		if got, _ := d.verdict(t, p); got != s.allowed {
			t.Errorf("%v: Evaluate says allowed=%v, the API says %v", p, got, s.allowed)
		}
		if p.proto != protoSCTP || d.sctp {
			out = append(out, p)
		}
	}
	return out
}

// randomProbes draws n probes between distinct pods.
func (d *dpNet) randomProbes(rng *rand.Rand, n int) []probe {
	protos := []uint8{protoTCP, protoTCP, protoUDP, protoUDP, protoICMP}
	if d.sctp {
		protos = append(protos, protoSCTP)
	}
	served := servedPorts()
	var out []probe
	for len(out) < n {
		p := probe{src: d.pods[rng.IntN(len(d.pods))], dst: d.pods[rng.IntN(len(d.pods))],
			fam: Family(4 + 2*rng.IntN(2)), proto: protos[rng.IntN(len(protos))]}
		if p.src == p.dst {
			continue
		}
		switch p.proto {
		case protoTCP:
			p.port = served[TCP][rng.IntN(len(served[TCP]))]
		case protoUDP:
			p.port = served[UDP][rng.IntN(len(served[UDP]))]
		case protoSCTP:
			p.port = served[SCTP][rng.IntN(len(served[SCTP]))]
		}
		out = append(out, p)
	}
	return out
}

// verdict returns Evaluate's verdict on p across the nodes it crosses, and
// when denied the drop counters ("node/counter") its packet is counted on:
// those of the first pod chain that does not accept it, in the order the
// packet meets them (the source node's egress chain, then ingress; then the
// destination node's).
func (d *dpNet) verdict(t *testing.T, p probe) (bool, []string) {
	t.Helper()
	pk := p.packet()
	nodes := []*dpNode{p.src.node}
	if p.dst.node != p.src.node {
		nodes = append(nodes, p.dst.node)
	}
	allowed := true
	for _, n := range nodes {
		allowed = allowed && n.rs.Evaluate(pk)
	}
	var drops []string
walk:
	for _, n := range nodes {
		for _, hop := range []struct {
			dir  Direction
			addr netip.Addr
		}{{Egress, pk.Src}, {Ingress, pk.Dst}} {
			chain, ok := n.rs.Pods[hop.dir][hop.addr]
			if !ok || n.rs.run(chain, pk, 0) == Accept {
				continue
			}
			for _, r := range n.rs.Chains[chain].Rules {
				for _, c := range r.Counters {
					drops = append(drops, n.name+"/"+c)
				}
			}
			break walk
		}
	}
	if allowed != (len(drops) == 0) {
		t.Fatalf("%v: Evaluate says allowed=%v but the chains drop it on %v", p, allowed, drops)
	}
	return allowed, drops
}

// probeTally counts probes.
type probeTally struct {
	probes, allowed, denied int
	byProto                 map[string]int
	took                    time.Duration
}

func (y *probeTally) add(o probeTally) {
	y.probes += o.probes
	y.allowed += o.allowed
	y.denied += o.denied
	y.took += o.took
	if y.byProto == nil {
		y.byProto = map[string]int{}
	}
	for k, v := range o.byProto {
		y.byProto[k] += v
	}
}

func (y *probeTally) String() string {
	return fmt.Sprintf("%d probes (%d allowed, %d denied; by protocol and family %v) in %v",
		y.probes, y.allowed, y.denied, y.byProto, y.took.Round(time.Millisecond))
}

// runProbes sends the probes, 24 at a time, and compares each verdict with
// Evaluate's and the drop counters' increase with the denied probes'.
func (d *dpNet) runProbes(t *testing.T, probes []probe) probeTally {
	t.Helper()
	start := time.Now()
	allowedWait := testenv.Scale(t, 3*time.Second)
	type outcome struct {
		want  bool
		got   result
		drops []string
		err   error
	}
	results := make([]outcome, len(probes))
	y := probeTally{probes: len(probes), byProto: map[string]int{}}
	for i, p := range probes {
		results[i].want, results[i].drops = d.verdict(t, p)
		if results[i].want {
			y.allowed++
		} else {
			y.denied++
		}
		y.byProto[fmt.Sprintf("%s%d", protoLabel(p.proto), p.fam)]++
	}
	// Every probe starts with neighbour resolution, as traffic does once
	// a cache entry has expired: ARP, and IPv6's neighbour discovery,
	// which passes the forward hook between pods of one bridge.
	for _, p := range d.pods {
		testenv.IP(t, "-n", p.ns, "neigh", "flush", "all")
	}
	before := d.counters(t)
	sem := make(chan struct{}, 24)
	var wg sync.WaitGroup
	for i, p := range probes {
		wait := deniedWait
		if results[i].want {
			wait = allowedWait
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i].got, results[i].err = p.send(context.Background(), wait, results[i].want)
		})
	}
	wg.Wait()
	after := d.settledCounters(t)
	least, most := map[string]uint64{}, map[string]uint64{}
	for i, r := range results {
		switch {
		case r.err != nil:
			t.Errorf("%v: %v", probes[i], r.err)
		case r.got.connected != r.want:
			t.Errorf("%v: the kernel %s it, Evaluate %s it", probes[i], verdictWord(r.got.connected), verdictWord(r.want))
		}
		if !r.want {
			l, m := probes[i].sent(r.got.lived)
			for _, c := range r.drops {
				least[c] += uint64(l)
				most[c] += uint64(m)
			}
		}
	}
	if !checkDrops(t, before, after, least, most) {
		for i, r := range results {
			if !r.want {
				t.Logf("denied probe %v: connected %v, socket lived %v, counted on %v", probes[i], r.got.connected, r.got.lived.Round(time.Millisecond), r.drops)
			}
		}
	}
	y.took = time.Since(start)
	t.Logf("%s", &y)
	return y
}

// settledCounters reads the drop counters until two reads a moment apart
// agree: a denied probe's packet may leave late, once neighbour resolution
// (slow on a slow kernel) lets it.
func (d *dpNet) settledCounters(t *testing.T) map[string]uint64 {
	t.Helper()
	last := d.counters(t)
	for range 20 {
		time.Sleep(testenv.Scale(t, 200*time.Millisecond))
		now := d.counters(t)
		if maps.Equal(now, last) {
			return now
		}
		last = now
	}
	t.Fatalf("the drop counters did not settle: %v", last)
	return nil
}

// checkDrops holds each drop counter's increase to the packets the denied
// probes sent there: from least to most (a probe's first packet, and the
// retransmissions that may have been due while it waited).
func checkDrops(t *testing.T, before, after, least, most map[string]uint64) bool {
	t.Helper()
	ok := true
	for _, name := range sortedKeys(counterKeys(before, after, most)) {
		if got := after[name] - before[name]; got < least[name] || got > most[name] {
			t.Errorf("drop counter %s counted %d packets; the denied probes sent %d to %d there", name, got, least[name], most[name])
			ok = false
		}
	}
	return ok
}

// protoLabel names a probe's protocol.
func protoLabel(proto uint8) string {
	if proto == protoICMP {
		return "icmp"
	}
	return protocolName(proto)
}

func verdictWord(allowed bool) string {
	if allowed {
		return "allowed"
	}
	return "denied"
}

func counterKeys(ms ...map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for _, m := range ms {
		for k := range m {
			out[k] = 0
		}
	}
	return out
}
