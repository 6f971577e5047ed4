package netpol

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// TestDifferential compares weft with the reference, kube-network-policies'
// evaluator (differential_ref_test.go), on generated clusters
// (differential_gen_test.go): for every world, every node's Ruleset is
// compiled, and for each generated packet weft's verdict, composed from the
// nodes' Evaluate, must equal the reference's.
//
// Where weft deliberately differs, the case is excluded, and only it:
//
//   - An address that only finished pods hold. The reference indexes pods by
//     address whatever their phase, so it applies a finished pod's policies
//     and labels to that address; weft ignores finished pods (their
//     addresses may already be a new pod's) and treats it as an address
//     outside the cluster. A finished pod whose address a running pod now
//     holds is compared: both take the running pod.
//   - An address two running pods hold (only FuzzCompile makes these): the
//     reference takes whichever its index lists first.
//
// What needs no exclusion: hostNetwork pods are neither selected nor peers
// in either (their address is the node's, matched only by ipBlocks); pods
// without addresses take no part in either. Packets to a TCP, UDP or SCTP
// port 0 are not generated: the reference reads a named port as number 0.
// ICMPv6 is compared as the reference's evaluator judges it, though its
// nftables rules accept all ICMPv6 before asking the evaluator.
func TestDifferential(t *testing.T) {
	const worlds, packetsPerWorld = 3000, 200
	ref := newReference(t)
	start := time.Now()
	var st diffStats
	var fails []diffFailure
	for seed := range uint64(worlds) {
		r := rand.New(rand.NewPCG(seed, 0x77656674))
		w := generateWorld(randChooser{r}, false)
		j, err := newJudge(w, ref)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if len(j.errs) > 0 {
			t.Errorf("seed %d: errors compiling a valid cluster: %v", seed, j.errs)
			continue
		}
		st.worlds++
		seedFailed := false
		for _, p := range packets(w, randChooser{r}, packetsPerWorld) {
			v, skip := j.decide(p)
			st.count(p, v, skip)
			if skip == "" && v.mismatch() && !seedFailed {
				fails = append(fails, diffFailure{fmt.Sprintf("seed %d", seed), w, p, v})
				seedFailed = true
			}
		}
	}
	t.Logf("%d worlds, %d packets in %v: %d allowed, %d denied, %d mismatches; excluded: %v",
		st.worlds, st.packets, time.Since(start).Round(time.Millisecond), st.allowed, st.denied, st.mismatches, st.excluded)
	t.Logf("packets by kind: %v", st.kinds)
	if st.mismatches > 0 {
		t.Errorf("weft and kube-network-policies disagree on %d of %d packets, in %d worlds; the first, minimized:",
			st.mismatches, st.packets, len(fails))
	}
	for _, f := range fails[:min(len(fails), 4)] {
		t.Error(f.explain(ref))
	}
}

type diffStats struct {
	worlds, packets, allowed, denied, mismatches int
	excluded, kinds                              map[string]int
}

func (st *diffStats) count(p Packet, v verdict, skip string) {
	if st.excluded == nil {
		st.excluded, st.kinds = map[string]int{}, map[string]int{}
	}
	st.packets++
	switch {
	case skip != "":
		st.excluded[skip]++
		return
	case v.mismatch():
		st.mismatches++
	case v.ref:
		st.allowed++
	default:
		st.denied++
	}
	st.kinds[v.kind]++
}

// judge holds one world compiled for each node and loaded in the
// reference.
type judge struct {
	w    *world
	rs   map[string]*Ruleset
	errs []error
	ref  *reference
	// holders lists the pods (not on the host network) holding each address.
	holders map[netip.Addr][]*corev1.Pod
}

func newJudge(w *world, ref *reference) (*judge, error) {
	j := &judge{w: w, rs: map[string]*Ruleset{}, ref: ref, holders: map[netip.Addr][]*corev1.Pod{}}
	c := toCluster(w)
	for _, n := range w.Nodes {
		rs, errs := Compile(c, n)
		j.rs[n], j.errs = rs, append(j.errs, errs...)
	}
	for i := range w.Pods {
		p := &w.Pods[i]
		for _, ip := range p.Status.PodIPs {
			if a, err := netip.ParseAddr(ip.IP); err == nil && !p.Spec.HostNetwork {
				j.holders[a] = append(j.holders[a], p)
			}
		}
	}
	return j, ref.load(w)
}

// verdict is what weft and the reference do with a packet.
type verdict struct {
	weft, ref bool
	nodes     []string // each node's verdict, for reports
	stray     string   // a node that holds neither end's pod, yet denies
	kind      string   // where the packet goes, for the statistics
}

func (v verdict) mismatch() bool { return v.weft != v.ref || v.stray != "" }

// excluded returns why p is not compared, or "".
func (j *judge) excluded(p Packet) string {
	for _, a := range []netip.Addr{p.Src, p.Dst} {
		live, done := 0, 0
		for _, pod := range j.holders[a] {
			if finished(pod) {
				done++
			} else {
				live++
			}
		}
		switch {
		case live == 0 && done > 0:
			return "address only a finished pod holds"
		case live > 1:
			return "address two running pods hold"
		}
	}
	return ""
}

// nodeOf returns the node of the running pod holding a, or "".
func (j *judge) nodeOf(a netip.Addr) string {
	for _, pod := range j.holders[a] {
		if !finished(pod) {
			return pod.Spec.NodeName
		}
	}
	return ""
}

// decide returns both verdicts on p, or why p is not compared.
//
// Weft's verdict is composed from the nodes' rulesets as the packet meets
// them: it leaves its source pod through the forward hook of that pod's
// node, whose table holds the source's egress policies (and the
// destination's ingress policies when the destination is on the same
// node), and enters the destination pod through the forward hook of its
// node, whose table holds the destination's ingress policies. Each node's
// table holds only its own pods, so the packet is allowed when the source's
// node and the destination's node both allow it (one node when they share
// it; none for an address that is no running pod's), and every other node's
// table must let it through untouched, which the test checks too (stray).
// The reference's evaluatePacket reads cluster-wide informers and is the
// same on every node: egress of the source pod and ingress of the
// destination pod in one call, which is what its agents on the two nodes
// decide between them.
func (j *judge) decide(p Packet) (verdict, string) {
	if why := j.excluded(p); why != "" {
		return verdict{}, why
	}
	src, dst := j.nodeOf(p.Src), j.nodeOf(p.Dst)
	v := verdict{weft: true, ref: j.ref.allows(p), kind: packetKind(src, dst)}
	for _, n := range j.w.Nodes {
		allowed := j.rs[n].Evaluate(p)
		v.nodes = append(v.nodes, fmt.Sprintf("%s %s", n, allowWord(allowed)))
		switch {
		case n == src || n == dst:
			v.weft = v.weft && allowed
		case !allowed:
			v.stray = n
		}
	}
	return v, ""
}

func packetKind(src, dst string) string {
	switch {
	case src != "" && src == dst:
		return "pod to pod, one node"
	case src != "" && dst != "":
		return "pod to pod, two nodes"
	case src != "":
		return "pod to outside"
	case dst != "":
		return "outside to pod"
	}
	return "outside to outside"
}

func allowWord(b bool) string {
	if b {
		return "allows"
	}
	return "denies"
}

// packetPorts are the destination ports packets use: the pods' and
// policies' numbers and the edges of their ranges.
func packetPorts() []int32 {
	return append([]int32{1, 100, 101, 1180, 1181, 8081, 9120, 9121, 65535}, portNumbers()...)
}

// packets returns n first packets of one family each, mostly between pods:
// TCP, UDP and SCTP to a port (often one the destination pod names), ICMP
// (1 or 58) with port 0.
func packets(w *world, c chooser, n int) []Packet {
	g := &gen{c: c}
	var pods, outside [2][]netip.Addr
	for _, a := range worldAddrs(w) {
		pods[btoi(a.Is6())] = append(pods[btoi(a.Is6())], a)
	}
	for _, a := range outsideAddrs() {
		outside[btoi(a.Is6())] = append(outside[btoi(a.Is6())], a)
	}
	ports := containerPorts(w)
	var out []Packet
	for len(out) < n {
		f := g.n(2)
		end := func() netip.Addr {
			if g.chance(15) || len(pods[f]) == 0 {
				return pick(g, outside[f])
			}
			return pick(g, pods[f])
		}
		p := Packet{Src: end(), Dst: end()}
		switch k := g.n(100); {
		case k < 40:
			p.Proto = 6
		case k < 65:
			p.Proto = 17
		case k < 85:
			p.Proto = 132
		case p.Src.Is4():
			p.Proto = 1
		default:
			p.Proto = 58
		}
		if p.Proto == 1 || p.Proto == 58 {
			out = append(out, p)
			continue
		}
		p.DstPort = uint16(pick(g, packetPorts()))
		if named := ports[p.Dst]; len(named) > 0 && g.chance(50) {
			np := pick(g, named)
			p.Proto, p.DstPort = np.Protocol.Number(), np.Port
		}
		out = append(out, p)
	}
	return out
}

// containerPorts returns the container ports of the pods holding each
// address.
func containerPorts(w *world) map[netip.Addr][]NamedPort {
	out := map[netip.Addr][]NamedPort{}
	for _, pod := range toCluster(w).Pods {
		for _, a := range pod.IPs {
			out[a] = append(out[a], pod.Ports...)
		}
	}
	return out
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func protoWord(n uint8) string {
	switch n {
	case 1:
		return "ICMP"
	case 58:
		return "ICMPv6"
	}
	return strings.ToUpper(protocolName(n))
}

// diffFailure is a packet on which weft and the reference disagree.
type diffFailure struct {
	from string // "seed N", or the fuzz input
	w    *world
	p    Packet
	v    verdict
}

// explain minimizes the failure's world and describes it.
func (f diffFailure) explain(ref *reference) string {
	w := minimize(f.w, func(w *world) bool {
		if !consistent(w) {
			return false
		}
		j, err := newJudge(w, ref)
		if err != nil || len(j.errs) > 0 {
			return false
		}
		v, skip := j.decide(f.p)
		return skip == "" && v.weft == f.v.weft && v.ref == f.v.ref && (v.stray == "") == (f.v.stray == "")
	})
	j, err := newJudge(w, ref)
	if err != nil {
		return err.Error()
	}
	v, _ := j.decide(f.p)
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s %s -> %s port %d: weft %s (%s), the reference %s",
		f.from, protoWord(f.p.Proto), f.p.Src, f.p.Dst, f.p.DstPort, allowWord(v.weft), strings.Join(v.nodes, ", "), allowWord(v.ref))
	if v.stray != "" {
		fmt.Fprintf(&b, "; node %s holds neither end yet denies", v.stray)
	}
	b.WriteString("\n" + describe(w))
	return b.String()
}
