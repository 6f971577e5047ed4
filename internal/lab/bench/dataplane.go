//go:build linux

package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/cluster"
	"github.com/weft-net/weft/internal/netlinkx"
)

// cleanBackend removes the devices of every backend type of this build
// (not only the measured ones: the control plane runs vxlan whatever
// --backends says) and weft's routes from a node whose weftd is stopped, so
// that the next backend starts from a clean kernel state. Most of the
// objects do not exist: the errors of ip -force are in the output.
func (b *bench) cleanBackend(ctx context.Context, node int) ([]byte, error) {
	var s strings.Builder
	for _, d := range lab.BackendDevices() {
		fmt.Fprintf(&s, "link del %s\n", d)
	}
	fmt.Fprintf(&s, "route flush proto %d\n", netlinkx.RouteProtocol)
	cmd := lab.Command(ctx, b.c.NodeNS(node), "ip", "-force", "-batch", "-")
	cmd.Stdin = strings.NewReader(s.String())
	return cmd.CombinedOutput()
}

// endpoint is one end of a throughput or latency test.
type endpoint struct {
	ns   string
	addr netip.Addr
}

// path is what a data-plane figure measures: from client to server, through
// the backend (pod) or the underlay (node, the baseline).
type path struct {
	client, server endpoint
}

// dataPlane switches the lab to v, attaches a fresh pod on n1 and n2 (so the
// pods get v's MTU, as in a cluster running v) and measures.
func (b *bench) dataPlane(ctx context.Context, v Variant) (DataPlane, error) {
	if err := b.switchBackend(ctx, v); err != nil {
		return DataPlane{}, err
	}
	pod, node, err := b.paths(ctx, v)
	if err != nil {
		return DataPlane{}, err
	}
	ip := Iperf{Proc: b.proc}
	for _, srv := range []endpoint{pod.server, node.server} {
		stop, err := ip.StartServer(ctx, srv.ns, srv.addr)
		if err != nil {
			return DataPlane{}, err
		}
		defer stop()
	}
	// Pod and node runs alternate, so that both see the same machine load.
	got := map[string][]Transfer{}
	for r := range b.o.Runs {
		for _, streams := range []int{1, 4} {
			for _, which := range []string{"node", "pod"} {
				p := map[string]path{"node": node, "pod": pod}[which]
				b.prog.Step(b.o.Duration+time.Second, "%s: TCP %d stream(s) %s to %s, run %d/%d", v, streams, which, which, r+1, b.o.Runs)
				t, err := ip.Run(ctx, p.client.ns, p.server.addr, streams, b.o.Duration)
				if err != nil {
					return DataPlane{}, err
				}
				key := fmt.Sprintf("%s%d", which, streams)
				got[key] = append(got[key], t)
			}
		}
	}
	b.prog.Step(time.Duration(2*b.o.Pings)*20*time.Millisecond, "%s: %d round trips pod to pod and node to node", v, b.o.Pings)
	podRTT, nodeRTT, err := b.rtts(ctx, pod, node)
	if err != nil {
		return DataPlane{}, err
	}
	return dataPlaneFigures(v, got, podRTT, nodeRTT), nil
}

// dataPlaneFigures turns the runs into figures.
func dataPlaneFigures(v Variant, got map[string][]Transfer, podRTT, nodeRTT []time.Duration) DataPlane {
	stat := func(key string, f func(Transfer) float64) Stat {
		xs := make([]float64, 0, len(got[key]))
		for _, t := range got[key] {
			xs = append(xs, f(t))
		}
		return Summarise(xs)
	}
	gbps := func(t Transfer) float64 { return t.BitsPerSecond / 1e9 }
	retr := func(t Transfer) float64 { return t.Retransmits }
	cpu := Transfer.CPUPerGB
	return DataPlane{
		Backend:      v.String(),
		Variant:      v,
		TCP1:         NewFigure("TCP 1 stream", "Gbit/s", "higher", baseUnderlay, stat("pod1", gbps), stat("node1", gbps)),
		TCP4:         NewFigure("TCP 4 streams", "Gbit/s", "higher", baseUnderlay, stat("pod4", gbps), stat("node4", gbps)),
		Retransmits1: NewFigure("retransmits, 1 stream", "per run", "lower", baseUnderlay, stat("pod1", retr), stat("node1", retr)),
		RTT:          NewFigure("round trip (ICMP)", "ms", "lower", baseUnderlay, Summarise(ms(podRTT)), Summarise(ms(nodeRTT))),
		CPU1:         NewFigure("CPU per GB, 1 stream", "CPU s/GB", "lower", baseUnderlay, stat("pod1", cpu), stat("node1", cpu)),
		CPU4:         NewFigure("CPU per GB, 4 streams", "CPU s/GB", "lower", baseUnderlay, stat("pod4", cpu), stat("node4", cpu)),
	}
}

// switchBackend restarts every weftd with v's net-conf.json from a clean
// kernel state; each node takes its old lease (and subnet) back.
func (b *bench) switchBackend(ctx context.Context, v Variant) error {
	b.prog.Step(5*time.Second, "%s: switching every node to %s", v, v)
	if v == b.current {
		return nil
	}
	nodes := len(b.c.Lab().Nodes())
	for n := 1; n <= nodes; n++ {
		if err := b.c.KillWeftd(n, false); err != nil && b.c.Pid(n) != 0 {
			return err
		}
	}
	if err := b.c.Put(ctx, cluster.Prefix+"/config", v.NetConf()); err != nil {
		return fmt.Errorf("write net-conf.json for %s: %w", v, err)
	}
	for n := 1; n <= nodes; n++ {
		out, err := b.cleanBackend(ctx, n)
		b.log.Debug("backend cleanup", "node", n, "out", string(out), "err", err) // most objects do not exist
		if err := b.c.StartWeftd(n); err != nil {
			return err
		}
	}
	for n := 1; n <= nodes; n++ {
		if err := b.c.WaitReady(ctx, n); err != nil {
			return err
		}
	}
	b.current = v
	return nil
}

// paths attaches this variant's pods and returns the pod and node paths
// (client on n2, server on n1), once both answer pings.
func (b *bench) paths(ctx context.Context, v Variant) (pod, node path, _ error) {
	idx := 1
	for i, w := range b.variants {
		if w == v {
			idx = i + 1
		}
	}
	var eps [2]endpoint
	for i := range eps {
		p, err := b.c.AddPod(ctx, i+1, idx)
		if err != nil {
			return path{}, path{}, err
		}
		a, ok := firstV4(p.Addrs)
		if !ok {
			return path{}, path{}, fmt.Errorf("pod %d on node %d has no IPv4 address", idx, i+1)
		}
		eps[i] = endpoint{ns: p.NS, addr: a}
	}
	pod = path{client: eps[1], server: eps[0]}
	var nodes [2]endpoint
	for i := range nodes {
		h, err := b.c.Lab().Node(i + 1)
		if err != nil {
			return path{}, path{}, err
		}
		nodes[i] = endpoint{ns: h.NS, addr: h.Addrs()[0]}
	}
	node = path{client: nodes[1], server: nodes[0]}
	for _, p := range []path{pod, node} {
		pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		_, err := lab.Ping(pctx, p.client.ns, p.server.addr)
		cancel()
		if err != nil {
			return path{}, path{}, fmt.Errorf("%s: no path from %s to %s: %w", v, p.client.ns, p.server.addr, err)
		}
	}
	return pod, node, nil
}

func firstV4(as []netip.Addr) (netip.Addr, bool) {
	for _, a := range as {
		if a.Is4() {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// rtts pings pod to pod and node to node, alternately, Pings times each.
func (b *bench) rtts(ctx context.Context, pod, node path) (podRTT, nodeRTT []time.Duration, _ error) {
	for range b.o.Pings {
		for _, p := range []path{pod, node} {
			rtt, err := lab.Ping(ctx, p.client.ns, p.server.addr)
			if err != nil {
				return nil, nil, fmt.Errorf("ping %s from %s: %w", p.server.addr, p.client.ns, err)
			}
			if p == pod {
				podRTT = append(podRTT, rtt)
			} else {
				nodeRTT = append(nodeRTT, rtt)
			}
		}
	}
	if len(podRTT) == 0 {
		return nil, nil, errors.New("no round trip measured")
	}
	return podRTT, nodeRTT, nil
}
