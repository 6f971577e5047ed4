//go:build linux

package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"sort"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/internal/kernel"
	"github.com/weft-net/weft/internal/netlinkx"
)

// Benchmarks of the daemon (root). Each reports its figure next to a
// baseline measured in the same run:
//   - BenchmarkStartup: Run until every route, neighbour and FDB entry of N
//     peers is in the kernel, vs the same objects written directly with
//     netlink in one loop;
//   - BenchmarkLeaseToRoute: an etcd write to the route appearing (and a
//     delete to it going), seen by a netlink subscription, vs the etcd
//     write's own round trip.

// peerSubnet is the i-th peer subnet of 10.0.0.0/8 (never 10.0.0.0/24).
func peerSubnet(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte((i + 1) >> 8), byte(i + 1), 0}), 24)
}

func peerMAC(i int) string { return fmt.Sprintf("0a:00:00:00:%02x:%02x", byte(i>>8), byte(i)) }

func peerIP(i int) string { return fmt.Sprintf("192.168.%d.%d", 101+i/250, 1+i%250) }

// writePeers writes n vxlan peer leases in transactions of 100.
func (c *cluster) writePeers(t testing.TB, n int) {
	t.Helper()
	ctx := context.Background()
	g, err := c.cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	var ops []clientv3.Op
	flush := func() {
		if _, err := c.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
		ops = ops[:0]
	}
	for i := range n {
		v, _ := json.Marshal(map[string]any{"PublicIP": peerIP(i), "PublicIPv6": nil, "BackendType": "vxlan",
			"BackendData": map[string]any{"VNI": 1, "VtepMAC": peerMAC(i)}})
		s := peerSubnet(i)
		ops = append(ops, clientv3.OpPut(fmt.Sprintf("%s/subnets/%s-%d", prefix, s.Addr(), s.Bits()), string(v), clientv3.WithLease(g.ID)))
		if len(ops) == 100 {
			flush()
		}
	}
	if len(ops) > 0 {
		flush()
	}
}

const benchNetConf = `{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}`

func BenchmarkStartup(b *testing.B) {
	needRoot(b)
	for _, n := range []int{0, 1000, 5000} {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			c := newCluster(b, benchNetConf)
			c.writePeers(b, n)
			var weft, base time.Duration
			for b.Loop() {
				b.StopTimer()
				nd := newNode(b, "192.168.100.11")
				b.StartTimer()
				start := time.Now()
				d := startDaemon(b, nd, c, tempFile(b, "subnet.env"))
				weft += time.Since(start)
				b.StopTimer()
				d.stop(b)
				base += directNetlink(b, n)
				b.StartTimer()
			}
			b.ReportMetric(float64(weft.Microseconds())/float64(b.N)/1000, "ms/startup")
			b.ReportMetric(float64(base.Microseconds())/float64(b.N)/1000, "ms/baseline")
			if base > 0 {
				b.ReportMetric(float64(weft)/float64(base), "ratio")
			}
		})
	}
}

// directNetlink writes n peers' route, neighbour and FDB entry with netlink in
// one loop into a fresh namespace with a vxlan device: the floor for
// start-up.
func directNetlink(b *testing.B, n int) time.Duration {
	nd := newNode(b, "192.168.100.11")
	sh(b, "ip", "-n", nd.name, "link", "add", "flannel.1", "type", "vxlan", "id", "1", "local", "192.168.100.11", "dev", "eth0",
		"dstport", "8472", "nolearning")
	sh(b, "ip", "-n", nd.name, "link", "set", "flannel.1", "up")
	l, err := nd.nl.LinkByName("flannel.1")
	if err != nil {
		b.Fatal(err)
	}
	idx := l.Index
	start := time.Now()
	for i := range n {
		s := peerSubnet(i)
		mac, _ := kernel.ParseMAC(peerMAC(i))
		if err := nd.nl.SetFDB(kernel.FDB{MAC: mac, Dst: netip.MustParseAddr(peerIP(i)), LinkIndex: idx}); err != nil {
			b.Fatal(err)
		}
		if err := nd.nl.SetNeigh(kernel.Neigh{IP: s.Addr(), MAC: mac, LinkIndex: idx}); err != nil {
			b.Fatal(err)
		}
		if err := nd.nl.ReplaceRoute(kernel.Route{Dst: s, Gw: s.Addr(), LinkIndex: idx, OnLink: true}); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(start)
}

func BenchmarkLeaseToRoute(b *testing.B) {
	needRoot(b)
	for _, scraping := range []bool{false, true} {
		b.Run(fmt.Sprintf("scrape=%v", scraping), func(b *testing.B) { leaseToRoute(b, scraping) })
	}
}

// leaseToRoute measures lease to route at 1,000 peers; with scraping, a
// goroutine scrapes /metrics back to back meanwhile, and the figures show
// whether a scrape delays the daemon's loop.
func leaseToRoute(b *testing.B, scraping bool) {
	c := newCluster(b, benchNetConf)
	c.writePeers(b, 1000)
	nd := newNode(b, "192.168.100.11")
	d := startDaemon(b, nd, c, tempFile(b, "subnet.env"))
	if scraping {
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			h, req := d.m.Handler(), httptest.NewRequest("GET", "/metrics", nil)
			for {
				select {
				case <-stop:
					return
				default:
				}
				h.ServeHTTP(httptest.NewRecorder(), req)
			}
		}()
		b.Cleanup(func() { close(stop); <-done })
	}
	routes := subscribeRoutes(b, nd.ns)
	var add, del, rtt []time.Duration
	const trials = 100
	for b.Loop() {
		add, del, rtt = add[:0], del[:0], rtt[:0]
		for i := range trials {
			s := peerSubnet(2000 + i)
			key := fmt.Sprintf("%s/subnets/%s-%d", prefix, s.Addr(), s.Bits())
			v, _ := json.Marshal(map[string]any{"PublicIP": peerIP(2000 + i), "BackendType": "vxlan",
				"BackendData": map[string]any{"VNI": 1, "VtepMAC": peerMAC(2000 + i)}})
			t0 := time.Now()
			if _, err := c.cli.Put(context.Background(), key, string(v)); err != nil {
				b.Fatal(err)
			}
			rtt = append(rtt, time.Since(t0))
			add = append(add, waitRoute(b, routes, s, unix.RTM_NEWROUTE).Sub(t0))
			t0 = time.Now()
			if _, err := c.cli.Delete(context.Background(), key); err != nil {
				b.Fatal(err)
			}
			del = append(del, waitRoute(b, routes, s, unix.RTM_DELROUTE).Sub(t0))
		}
	}
	report := func(name string, d []time.Duration) {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, name+"-p50-ms")
		b.ReportMetric(float64(d[len(d)*95/100].Microseconds())/1000, name+"-p95-ms")
	}
	report("add", add)
	report("del", del)
	report("etcd-put", rtt)
}

type routeEvent struct {
	dst netip.Prefix
	typ uint16
	at  time.Time
}

func subscribeRoutes(b *testing.B, ns netns.NsHandle) chan routeEvent {
	ch := make(chan netlink.RouteUpdate, 4096)
	done := make(chan struct{})
	b.Cleanup(func() { close(done) })
	if err := netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{Namespace: &ns}); err != nil {
		b.Fatal(err)
	}
	out := make(chan routeEvent, 4096)
	go func() {
		for u := range ch {
			if u.Dst != nil {
				out <- routeEvent{dst: netlinkx.PrefixFromIPNet(u.Dst), typ: u.Type, at: time.Now()}
			}
		}
	}()
	return out
}

func waitRoute(b *testing.B, ch chan routeEvent, dst netip.Prefix, typ uint16) time.Time {
	timeout := time.After(5 * time.Second)
	for {
		select {
		case e := <-ch:
			if e.dst == dst && e.typ == typ {
				return e.at
			}
		case <-timeout:
			b.Fatalf("no route event %d for %s", typ, dst)
		}
	}
}
