//go:build linux

package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netns"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/internal/backend/vxlan"
	"github.com/weft-net/weft/internal/kernel"
	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/netlinkx"
)

// joinNode is the node that joins the simulated cluster.
const joinNode = 3

// clusterNetwork is the bench's net-conf.json Network (see Variant.NetConf).
func clusterNetwork() []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")} }

// joinRun is one measured join and its baseline.
type joinRun struct {
	weftd, direct       time.Duration // until every route is in the kernel
	weftdCPU, directCPU time.Duration
	rss                 int64
}

// controlPlane measures joins and lease-to-route latency for each size, with
// vxlan; the other nodes' daemons are stopped so that only the joining
// node's weftd works.
func (b *bench) controlPlane(ctx context.Context) ([]ControlPlane, error) {
	if err := b.switchBackend(ctx, Variant{Type: vxlan.Name}); err != nil {
		return nil, err
	}
	for n := range b.c.Lab().Nodes() {
		if n+1 != joinNode {
			if err := b.c.KillWeftd(n+1, false); err != nil {
				return nil, err
			}
		}
	}
	cli, err := b.etcdClient()
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	b.prog.Step(2*time.Second, "control plane: an idle weftd on n%d (its RSS is the baseline)", joinNode)
	idle, err := b.join(ctx, -1)
	if err != nil {
		return nil, err
	}
	var out []ControlPlane
	for _, n := range b.o.Peers {
		cp, err := b.peers(ctx, cli, n, idle)
		if err != nil {
			return nil, fmt.Errorf("%d peers: %w", n, err)
		}
		out = append(out, cp)
	}
	return out, nil
}

// peers measures one cluster size.
func (b *bench) peers(ctx context.Context, cli *clientv3.Client, n int, idle joinRun) (_ ControlPlane, retErr error) {
	b.prog.Step(time.Duration(n)*time.Millisecond, "control plane: writing %d peer leases into etcd", n)
	taken, err := takenSubnets(ctx, cli)
	if err != nil {
		return ControlPlane{}, err
	}
	all, err := simPeers(n+b.o.Trials, taken)
	if err != nil {
		return ControlPlane{}, err
	}
	sims, extra := all[:n], all[n:]
	id, err := putPeers(ctx, cli, sims)
	defer func() {
		if _, err := cli.Revoke(context.WithoutCancel(ctx), id); err != nil && id != 0 {
			retErr = errors.Join(retErr, fmt.Errorf("delete peer leases: %w", err))
		}
	}()
	if err != nil {
		return ControlPlane{}, err
	}
	want := len(taken) - 1 + n // every lease but the joining node's own
	var runs []joinRun
	for j := range b.o.JoinRuns {
		b.prog.Step(2*time.Second+time.Duration(n)*400*time.Microsecond,
			"control plane: %d peers, join %d/%d: direct netlink, then weftd on n%d", n, j+1, b.o.JoinRuns, joinNode)
		r, err := b.direct(ctx, sims)
		if err != nil {
			return ControlPlane{}, err
		}
		w, err := b.join(ctx, want)
		if err != nil {
			return ControlPlane{}, err
		}
		r.weftd, r.weftdCPU, r.rss = w.weftd, w.weftdCPU, w.rss
		runs = append(runs, r)
	}
	b.prog.Step(time.Duration(b.o.Trials)*60*time.Millisecond, "control plane: %d peers, lease-to-route latency, %d leases", n, b.o.Trials)
	lat, base, err := b.leaseToRoute(ctx, cli, id, extra)
	if err != nil {
		return ControlPlane{}, err
	}
	return controlPlaneFigures(n, runs, idle, lat, base), nil
}

func controlPlaneFigures(n int, runs []joinRun, idle joinRun, lat, base []time.Duration) ControlPlane {
	var weftd, direct, wcpu, dcpu, rss []float64
	for _, r := range runs {
		weftd, direct = append(weftd, r.weftd.Seconds()), append(direct, r.direct.Seconds())
		wcpu, dcpu = append(wcpu, r.weftdCPU.Seconds()), append(dcpu, r.directCPU.Seconds())
		rss = append(rss, float64(r.rss)/(1<<20))
	}
	return ControlPlane{
		Peers:         n,
		Join:          NewFigure("join: every route in the kernel", "s", "lower", baseJoin, Summarise(weftd), Summarise(direct)),
		LeaseRouteP50: NewFigure("lease to route p50", "ms", "lower", baseLeaseRoute, Percentile(ms(lat), 50), Percentile(ms(base), 50)),
		LeaseRouteP95: NewFigure("lease to route p95", "ms", "lower", baseLeaseRoute, Percentile(ms(lat), 95), Percentile(ms(base), 95)),
		RSS:           NewFigure("weftd RSS (vs idle weftd)", "MiB", "lower", baseRSS, Summarise(rss), Summarise([]float64{float64(idle.rss) / (1 << 20)})),
		CPU:           NewFigure("CPU to join (vs direct writer)", "CPU s", "lower", baseCPU, Summarise(wcpu), Summarise(dcpu)),
	}
}

// stopJoinNode stops the joining node's weftd and removes its backend state.
func (b *bench) stopJoinNode(ctx context.Context) error {
	if err := b.c.KillWeftd(joinNode, false); err != nil && b.c.Pid(joinNode) != 0 {
		return err
	}
	_, _ = b.cleanBackend(ctx, joinNode) // most objects do not exist
	return nil
}

// join starts weftd on the joining node from a clean state and waits until
// it is ready and want routes are in its kernel (want < 0: only ready).
func (b *bench) join(ctx context.Context, want int) (joinRun, error) {
	if err := b.stopJoinNode(ctx); err != nil {
		return joinRun{}, err
	}
	h, closeNL, err := b.netlinkAt(b.c.NodeNS(joinNode))
	if err != nil {
		return joinRun{}, err
	}
	defer closeNL()
	start := time.Now()
	if err := b.c.StartWeftd(joinNode); err != nil {
		return joinRun{}, err
	}
	if err := b.c.WaitReady(ctx, joinNode); err != nil {
		return joinRun{}, err
	}
	for want >= 0 {
		rs, err := h.ListRoutes(clusterNetwork())
		if err != nil {
			return joinRun{}, err
		}
		if len(rs) >= want {
			break
		}
		if time.Since(start) > 2*time.Minute {
			return joinRun{}, fmt.Errorf("%d of %d routes after %v; see %s", len(rs), want, time.Since(start), b.c.LogFile(joinNode))
		}
		time.Sleep(10 * time.Millisecond)
	}
	r := joinRun{weftd: time.Since(start)}
	pid := b.c.Pid(joinNode)
	if r.rss, err = b.proc.RSS(pid); err != nil {
		return joinRun{}, err
	}
	if r.weftdCPU, err = b.proc.ProcessCPU(pid); err != nil {
		return joinRun{}, err
	}
	return r, nil
}

// netlinkAt opens a netlink handle in ns.
func (b *bench) netlinkAt(ns string) (*netlinkx.Handle, func(), error) {
	nsh, err := netns.GetFromPath(lab.NSPath(ns))
	if err != nil {
		return nil, nil, fmt.Errorf("open netns %s: %w", ns, err)
	}
	h, err := netlinkx.NewAt(nsh)
	if err != nil {
		nsh.Close()
		return nil, nil, err
	}
	return h, func() { h.Close(); nsh.Close() }, nil
}

// direct is the baseline of a join: with weftd stopped, the peers' FDB
// entries, neighbours and routes written with batched netlink onto a fresh
// vxlan device in the joining node, timed with the writing thread's CPU.
func (b *bench) direct(ctx context.Context, peers []peer) (joinRun, error) {
	if err := b.stopJoinNode(ctx); err != nil {
		return joinRun{}, err
	}
	host, err := b.c.Lab().Node(joinNode)
	if err != nil {
		return joinRun{}, err
	}
	ns := host.NS
	if _, err := lab.Exec(ctx, ns, "ip", "link", "add", "flannel.1", "type", "vxlan", "id", "1", "local", host.Addrs()[0].String(),
		"dev", lab.NodeIface, "dstport", "8472", "nolearning"); err != nil {
		return joinRun{}, err
	}
	if _, err := lab.Exec(ctx, ns, "ip", "link", "set", "flannel.1", "up"); err != nil {
		return joinRun{}, err
	}
	h, closeNL, err := b.netlinkAt(ns)
	if err != nil {
		return joinRun{}, err
	}
	defer closeNL()
	l, err := h.LinkByName("flannel.1")
	if err != nil {
		return joinRun{}, fmt.Errorf("find flannel.1 in %s: %w", ns, err)
	}
	ws := peerWrites(peers, l.Index)
	var r joinRun
	err = lab.Do(ns, func() error {
		var before, after unix.Rusage
		_ = unix.Getrusage(unix.RUSAGE_THREAD, &before)
		start := time.Now()
		errs := h.WriteBatch(ws)
		r.direct = time.Since(start)
		_ = unix.Getrusage(unix.RUSAGE_THREAD, &after)
		r.directCPU = rusageCPU(after) - rusageCPU(before)
		return errors.Join(errs...)
	})
	if err != nil {
		return joinRun{}, fmt.Errorf("direct netlink writes: %w", err)
	}
	return r, b.stopJoinNode(ctx)
}

func rusageCPU(r unix.Rusage) time.Duration {
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}

// leaseToRoute puts one lease at a time and waits for its route on a netlink
// subscription in the joining node; the baseline of each is the put's round
// trip plus a direct netlink route write seen by the same subscription.
func (b *bench) leaseToRoute(ctx context.Context, cli *clientv3.Client, id clientv3.LeaseID, peers []peer) (lat, base []time.Duration, _ error) {
	return b.publishToRoute(ctx, peers, func(ctx context.Context, p peer) error {
		if _, err := cli.Put(ctx, p.key(), p.value(), clientv3.WithLease(id)); err != nil {
			return fmt.Errorf("put lease %s: %w", p.subnet, err)
		}
		return nil
	})
}

// publishToRoute publishes one peer at a time (an etcd put, a Node create)
// and waits for its route on a netlink subscription in the joining node; the
// baseline of each is publish's round trip plus a direct netlink route write
// seen by the same subscription.
func (b *bench) publishToRoute(ctx context.Context, peers []peer, publish func(context.Context, peer) error) (lat, base []time.Duration, _ error) {
	ns := b.c.NodeNS(joinNode)
	h, closeNL, err := b.netlinkAt(ns)
	if err != nil {
		return nil, nil, err
	}
	defer closeNL()
	l, err := h.LinkByName("flannel.1")
	if err != nil {
		return nil, nil, fmt.Errorf("find flannel.1 in %s: %w", ns, err)
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sub, err := subscribeRoutes(sctx, ns)
	if err != nil {
		return nil, nil, err
	}
	for i, p := range peers {
		t0 := time.Now()
		if err := publish(ctx, p); err != nil {
			return nil, nil, err
		}
		rtt := time.Since(t0)
		at, err := sub.wait(ctx, p.subnet, unix.RTM_NEWROUTE)
		if err != nil {
			return nil, nil, err
		}
		lat = append(lat, at.Sub(t0))
		// Outside the cluster network, so weftd leaves it alone.
		dst := netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 31, byte(i), 0}), 24)
		rt := kernel.Route{Dst: dst, Gw: dst.Addr(), LinkIndex: l.Index, OnLink: true}
		t1 := time.Now()
		if err := h.ReplaceRoute(rt); err != nil {
			return nil, nil, fmt.Errorf("write route %s: %w", dst, err)
		}
		at, err = sub.wait(ctx, dst, unix.RTM_NEWROUTE)
		if err != nil {
			return nil, nil, err
		}
		base = append(base, rtt+at.Sub(t1))
		if err := h.DeleteRoute(rt); err != nil {
			return nil, nil, fmt.Errorf("delete route %s: %w", dst, err)
		}
	}
	return lat, base, nil
}
