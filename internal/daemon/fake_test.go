//go:build linux

package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/kernel"
	"github.com/weft-net/weft/internal/kernel/kerneltest"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/netfilter/netfiltertest"
	"github.com/weft-net/weft/internal/store/storetest"
	"github.com/weft-net/weft/internal/subnetfile"

	"github.com/weft-net/weft/internal/testenv"
)

// The plain tier of the daemon's tests: Run on kerneltest's in-memory
// kernel, storetest's in-memory store and netfiltertest's rules, with every
// path under t.TempDir() and the health server, when there is one, on a
// free loopback port. Nothing here needs root or a namespace. The resync
// timer is an hour, so every repair below comes from a kernel notice (or a
// Lost notice's resync), never from the periodic check.

// fakeNode is one node: a kernel with eth0 at 192.168.100.11/24 holding the
// default route, and a store with a network configuration.
type fakeNode struct {
	k     *kerneltest.Fake
	st    *storetest.Fake
	rules *netfiltertest.Fake
	eth0  int
	file  string // subnet.env
}

const fakeNodeIP = "192.168.100.11"

func newFakeNode(t *testing.T, netconf string) *fakeNode {
	t.Helper()
	k := kerneltest.New()
	eth0 := k.AddExternal("eth0", 1500, true, netip.MustParsePrefix(fakeNodeIP+"/24"))
	st := storetest.NewFake(nil, nil, nil)
	st.SetConfig(netconf)
	return &fakeNode{k: k, st: st, rules: &netfiltertest.Fake{}, eth0: eth0,
		file: tempFile(t, "subnet.env")}
}

// lease writes a peer lease in flannel's JSON, as another node would, and
// returns its key.
func (n *fakeNode) lease(subnet, publicIP, mac, backendType string) string {
	data, _ := json.Marshal(map[string]any{"VNI": 1, "VtepMAC": mac})
	v, _ := json.Marshal(map[string]any{"PublicIP": publicIP, "PublicIPv6": nil, "BackendType": backendType,
		"BackendData": json.RawMessage(data)})
	key := strings.ReplaceAll(subnet, "/", "-")
	n.st.Put(key, v, false)
	return key
}

// start runs the daemon on kern (n.k when nil) until the test ends and
// waits until it is ready.
func (n *fakeNode) start(t *testing.T, kern kernel.Kernel, args ...string) *running {
	t.Helper()
	if kern == nil {
		kern = n.k
	}
	o, err := config.ParseOptions(append([]string{"--subnet-file", n.file}, args...),
		func(string) (string, bool) { return "", false }, nil)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return launch(t, o, Deps{Logger: log, Store: n.st.Client(log), Backends: backends(), Kernel: kern,
		NewRules:    func(*config.NetConf) (Rules, error) { return n.rules, nil },
		ResyncEvery: time.Hour}, logs, n.file, 5*time.Second, nil)
}

// fakeVXLANPeer is one vxlan peer's objects as kerneltest's Dump shows them.
func fakeVXLANPeer(subnet, mac, public string) []string {
	zero := netip.MustParsePrefix(subnet).Addr().String()
	return []string{
		"route " + subnet + " via " + zero + " dev flannel.1 onlink",
		"neigh " + zero + " lladdr " + mac + " dev flannel.1",
		"fdb " + mac + " dst " + public + " dev flannel.1",
	}
}

// dumpOf is the Dump of the given objects.
func dumpOf(peers ...[]string) string {
	var lines []string
	for _, p := range peers {
		lines = append(lines, p...)
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// ownMAC is the VTEP MAC the own lease publishes.
func ownMAC(t *testing.T, own lease.Lease) kernel.MAC {
	t.Helper()
	var d struct{ VtepMAC string }
	if err := json.Unmarshal(own.Attrs.BackendData, &d); err != nil {
		t.Fatalf("own lease's BackendData %s: %v", own.Attrs.BackendData, err)
	}
	mac, err := kernel.ParseMAC(d.VtepMAC)
	if err != nil {
		t.Fatal(err)
	}
	return mac
}

// vxlanDeviceProblem says what is wrong with flannel.1 ("" when nothing):
// it must be a vxlan device over eth0 with MTU 1450, the MAC mac, up, and
// exactly the own subnet's .0/32.
func (n *fakeNode) vxlanDeviceProblem(own lease.Lease, mac kernel.MAC) string {
	l, err := n.k.LinkByName("flannel.1")
	if err != nil {
		return err.Error()
	}
	addrs, err := n.k.Addrs(l.Index)
	if err != nil {
		return err.Error()
	}
	want := []netip.Prefix{netip.PrefixFrom(own.Subnet.Masked().Addr(), 32)}
	switch {
	case l.Kind != kernel.KindVXLAN || l.VXLAN == nil:
		return fmt.Sprintf("kind %q, vxlan %v", l.Kind, l.VXLAN)
	case l.VXLAN.VNI != 1 || l.VXLAN.Dev != n.eth0 || l.VXLAN.Local != netip.MustParseAddr(fakeNodeIP):
		return fmt.Sprintf("vxlan settings %+v", *l.VXLAN)
	case l.MTU != 1450:
		return fmt.Sprintf("MTU %d", l.MTU)
	case l.MAC != mac:
		return fmt.Sprintf("MAC %s, want %s", l.MAC, mac)
	case !l.Up:
		return "down"
	case !slices.Equal(addrs, want):
		return fmt.Sprintf("addresses %v, want %v", addrs, want)
	}
	return ""
}

// TestFakeStartup: with two vxlan peers, a host-gw peer, a lease that is not
// JSON and a vxlan lease with a bad VtepMAC in the store, the node comes up
// with exactly the two peers' route, neighbour and FDB entry, flannel.1 as
// vxlan wants it, subnet.env written and the masquerade rules set.
func TestFakeStartup(t *testing.T) {
	n := newFakeNode(t, testNetConf("vxlan"))
	n.lease("10.244.5.0/24", "192.168.100.15", "0a:00:00:00:00:05", "vxlan")
	n.lease("10.244.6.0/24", "192.168.100.16", "0a:00:00:00:00:06", "vxlan")
	n.lease("10.244.7.0/24", "192.168.100.17", "0a:00:00:00:00:07", "host-gw") // another backend
	n.st.Put("10.244.9.0-24", []byte("{not json"), false)                      // a bad writer
	n.lease("10.244.8.0/24", "192.168.100.18", "not-a-mac", "vxlan")           // another
	d := n.start(t, nil, "--ip-masq")

	want := dumpOf(fakeVXLANPeer("10.244.5.0/24", "0a:00:00:00:00:05", "192.168.100.15"),
		fakeVXLANPeer("10.244.6.0/24", "0a:00:00:00:00:06", "192.168.100.16"))
	if got := n.k.Dump(); got != want {
		t.Fatalf("kernel after start-up =\n%s\nwant\n%s", got, want)
	}
	mac := ownMAC(t, d.own)
	if p := n.vxlanDeviceProblem(d.own, mac); p != "" {
		t.Errorf("flannel.1: %s", p)
	}
	links, _ := n.k.Links()
	var names []string
	for _, l := range links {
		names = append(names, l.Name)
	}
	if !slices.Equal(names, []string{"lo", "eth0", "flannel.1"}) {
		t.Errorf("links %v, want lo, eth0, flannel.1", names)
	}
	if !netip.MustParsePrefix("10.244.0.0/16").Contains(d.own.Subnet.Addr()) || d.own.Subnet.Bits() != 24 ||
		d.own.Attrs.PublicIP != netip.MustParseAddr(fakeNodeIP) || d.own.Attrs.BackendType != "vxlan" {
		t.Errorf("own lease %s %+v", d.own.Key(), d.own.Attrs)
	}
	if _, _, ok := n.st.Get(d.own.Key()); !ok {
		t.Errorf("own lease %s not in the store", d.own.Key())
	}

	env, err := subnetfile.Read(n.file)
	if err != nil {
		t.Fatal(err)
	}
	if env.MTU != 1450 || env.Subnet != netip.PrefixFrom(d.own.Subnet.Addr().Next(), 24) ||
		!slices.Equal(env.Networks, []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}) || !env.IPMasq {
		t.Errorf("subnet.env = %+v", env)
	}
	if raw, _ := os.ReadFile(n.file); !strings.Contains(string(raw), "FLANNEL_MTU=1450\n") {
		t.Errorf("subnet.env lacks FLANNEL_MTU=1450:\n%s", raw)
	}

	cfg, ok := n.rules.Config()
	if !ok || !cfg.Masquerade || len(cfg.Networks) != 1 || cfg.Networks[0].Subnet != d.own.Subnet.Masked() ||
		cfg.Networks[0].Cluster != netip.MustParsePrefix("10.244.0.0/16") {
		t.Errorf("masquerade rules %+v (set: %v)", cfg, ok)
	}
	testenv.WaitFor(t, time.Second, "the rules' resync running", n.rules.Running)

	logs := d.log.String()
	for _, key := range []string{"10.244.7.0-24", "10.244.8.0-24"} {
		if c := strings.Count(logs, "ignoring peer lease\" lease="+key); c != 1 {
			t.Errorf("lease %s logged as ignored %d times, want once", key, c)
		}
	}
	if got := scrape(t, d).Value("weft_peers", nil); got != 2 {
		t.Errorf("weft_peers = %v, want 2", got)
	}
}

// TestFakeLeaseAddDelete: a lease written while the node runs is in the
// kernel within 1 s, and out again within 1 s of its deletion.
func TestFakeLeaseAddDelete(t *testing.T) {
	n := newFakeNode(t, testNetConf("vxlan"))
	n.lease("10.244.5.0/24", "192.168.100.15", "0a:00:00:00:00:05", "vxlan")
	n.start(t, nil)
	base := dumpOf(fakeVXLANPeer("10.244.5.0/24", "0a:00:00:00:00:05", "192.168.100.15"))
	if got := n.k.Dump(); got != base {
		t.Fatalf("kernel after start-up =\n%s\nwant\n%s", got, base)
	}

	key := n.lease("10.244.3.0/24", "192.168.100.13", "0a:00:00:00:00:03", "vxlan")
	with := dumpOf(fakeVXLANPeer("10.244.5.0/24", "0a:00:00:00:00:05", "192.168.100.15"),
		fakeVXLANPeer("10.244.3.0/24", "0a:00:00:00:00:03", "192.168.100.13"))
	took := testenv.WaitFor(t, time.Second, "new peer programmed", func() bool { return n.k.Dump() == with })
	t.Logf("lease to kernel in %v", took)

	n.st.Delete(key)
	took = testenv.WaitFor(t, time.Second, "deleted peer removed", func() bool { return n.k.Dump() == base })
	t.Logf("deletion to kernel in %v", took)
}

// TestFakeRepairs: what someone else does to the peers' objects and to
// flannel.1 is undone within 1 s, through the kernel's notices: a deleted
// route, a changed MTU, a removed address, the device set down, and the
// device deleted (made again with the same MAC, every peer replayed).
func TestFakeRepairs(t *testing.T) {
	n := newFakeNode(t, testNetConf("vxlan"))
	n.lease("10.244.5.0/24", "192.168.100.15", "0a:00:00:00:00:05", "vxlan")
	n.lease("10.244.6.0/24", "192.168.100.16", "0a:00:00:00:00:06", "vxlan")
	d := n.start(t, nil)
	want := dumpOf(fakeVXLANPeer("10.244.5.0/24", "0a:00:00:00:00:05", "192.168.100.15"),
		fakeVXLANPeer("10.244.6.0/24", "0a:00:00:00:00:06", "192.168.100.16"))
	mac := ownMAC(t, d.own)
	problem := func() string {
		if p := n.vxlanDeviceProblem(d.own, mac); p != "" {
			return "flannel.1: " + p
		}
		if got := n.k.Dump(); got != want {
			return "kernel:\n" + got
		}
		return ""
	}
	if p := problem(); p != "" {
		t.Fatalf("after start-up: %s", p)
	}
	dev := func() int {
		t.Helper()
		l, err := n.k.LinkByName("flannel.1")
		if err != nil {
			t.Fatal(err)
		}
		return l.Index
	}
	own0 := netip.PrefixFrom(d.own.Subnet.Masked().Addr(), 32)
	first := dev()
	for _, c := range []struct {
		what string
		do   func() error
		// fix is the start of the repair's write in the fake's log.
		fix string
	}{
		{"route deleted", func() error { return n.k.DeleteRoute(kernel.Route{Dst: netip.MustParsePrefix("10.244.5.0/24")}) },
			"route 10.244.5.0/24 via 10.244.5.0 "},
		{"MTU changed", func() error { return n.k.SetLinkMTU(dev(), 1400) }, "mtu 1450 flannel.1"},
		{"address removed", func() error { return n.k.DeleteAddr(dev(), own0) }, "addr flannel.1 " + own0.String()},
		{"set down", func() error { return n.k.SetLinkDown(dev()) }, "up flannel.1"},
		{"device deleted", func() error { return n.k.DeleteLink(dev()) }, "add vxlan flannel.1"},
	} {
		n.k.Calls()
		if err := c.do(); err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		start := time.Now()
		var last string
		for last = problem(); last != "" && time.Since(start) < time.Second; last = problem() {
			time.Sleep(5 * time.Millisecond)
		}
		if last != "" {
			t.Fatalf("%s: not repaired within 1 s: %s", c.what, last)
		}
		took := time.Since(start)
		// The change was made (the fake logged it first) and undone by
		// the daemon's write, not by chance.
		calls := n.k.Calls()
		if len(calls) < 2 || !slices.ContainsFunc(calls[1:], func(s string) bool { return strings.HasPrefix(s, c.fix) }) {
			t.Fatalf("%s: writes %q lack the repair %q", c.what, calls, c.fix)
		}
		t.Logf("%s: repaired in %v with %q", c.what, took.Round(time.Millisecond), calls[1:])
	}
	if dev() == first {
		t.Errorf("flannel.1 still has index %d after its deletion", first)
	}
	// Each repair was made once, not in a loop: after a quiet moment
	// nothing is being written.
	time.Sleep(100 * time.Millisecond)
	n.k.Calls()
	time.Sleep(200 * time.Millisecond)
	if calls := n.k.Calls(); len(calls) != 0 {
		t.Errorf("writes after the repairs settled: %q", calls)
	}
}

// lossyKernel is the fake kernel behind a monitor that loses route
// deletion notices on request, as a netlink socket that overran does
// before the kernel reports the overrun (Fake.Overflow).
type lossyKernel struct {
	*kerneltest.Fake
	mu   sync.Mutex
	drop map[netip.Prefix]chan struct{} // closed once that RouteGone is dropped
}

// dropNext loses the next RouteGone for dst; the channel is closed when it
// has been.
func (k *lossyKernel) dropNext(dst netip.Prefix) <-chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.drop == nil {
		k.drop = map[netip.Prefix]chan struct{}{}
	}
	c := make(chan struct{})
	k.drop[dst] = c
	return c
}

func (k *lossyKernel) dropped(n kernel.Notice) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	c, ok := k.drop[n.Dst]
	if !ok || n.Kind != kernel.RouteGone {
		return false
	}
	delete(k.drop, n.Dst)
	close(c)
	return true
}

// Monitor implements kernel.Kernel: the fake's notices, less the dropped
// ones. Its goroutine is in wg, like the fake's.
func (k *lossyKernel) Monitor(ctx context.Context, out chan<- kernel.Notice, wg *sync.WaitGroup) error {
	in := make(chan kernel.Notice, cap(out))
	if err := k.Fake.Monitor(ctx, in, wg); err != nil {
		return err
	}
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case n := <-in:
				if k.dropped(n) {
					continue
				}
				select {
				case out <- n:
				case <-ctx.Done():
					return
				}
			}
		}
	})
	return nil
}

// TestFakeLostNotices: a route deleted while the monitor was losing
// notices is not repaired by a notice (there was none), but the Lost
// notice the kernel sends after the overrun makes the daemon resync from a
// full dump, which restores it within 1 s.
func TestFakeLostNotices(t *testing.T) {
	n := newFakeNode(t, testNetConf("vxlan"))
	n.lease("10.244.5.0/24", "192.168.100.15", "0a:00:00:00:00:05", "vxlan")
	n.lease("10.244.6.0/24", "192.168.100.16", "0a:00:00:00:00:06", "vxlan")
	k := &lossyKernel{Fake: n.k}
	n.start(t, k)
	want := dumpOf(fakeVXLANPeer("10.244.5.0/24", "0a:00:00:00:00:05", "192.168.100.15"),
		fakeVXLANPeer("10.244.6.0/24", "0a:00:00:00:00:06", "192.168.100.16"))
	if got := n.k.Dump(); got != want {
		t.Fatalf("kernel after start-up =\n%s\nwant\n%s", got, want)
	}

	dst := netip.MustParsePrefix("10.244.5.0/24")
	lost := k.dropNext(dst)
	if err := n.k.DeleteRoute(kernel.Route{Dst: dst}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lost:
	case <-time.After(time.Second):
		t.Fatal("the route's deletion notice never reached the monitor")
	}
	// Without the notice the daemon does not know (the resync timer is an
	// hour away).
	time.Sleep(300 * time.Millisecond)
	if strings.Contains(n.k.Dump(), "route "+dst.String()) {
		t.Fatal("the route came back without its deletion notice or a Lost notice; the test shows nothing")
	}

	n.k.Overflow()
	took := testenv.WaitFor(t, time.Second, "the route restored by the resync", func() bool { return n.k.Dump() == want })
	t.Logf("restored %v after the Lost notice", took)
}

// TestFakeStopLeavesDataPlane: cancelling Run's context returns nil,
// writes nothing to the kernel (the device, routes, neighbours and FDB
// entries stay, as do the lease, the rules and subnet.env), stops the health
// server, and leaves no goroutine Run started.
func TestFakeStopLeavesDataPlane(t *testing.T) {
	before := runtime.NumGoroutine()
	n := newFakeNode(t, testNetConf("vxlan"))
	n.lease("10.244.5.0/24", "192.168.100.15", "0a:00:00:00:00:05", "vxlan")
	n.lease("10.244.6.0/24", "192.168.100.16", "0a:00:00:00:00:06", "vxlan")
	port := freePort(t)
	d := n.start(t, nil, "--ip-masq", "--healthz-ip", "127.0.0.1", "--healthz-port", strconv.Itoa(port))
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	url := fmt.Sprintf("http://127.0.0.1:%d/readyz", port)
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("readyz while running: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz while running: %s", resp.Status)
	}
	testenv.WaitFor(t, time.Second, "the rules' resync running", n.rules.Running)

	want := dumpOf(fakeVXLANPeer("10.244.5.0/24", "0a:00:00:00:00:05", "192.168.100.15"),
		fakeVXLANPeer("10.244.6.0/24", "0a:00:00:00:00:06", "192.168.100.16"))
	if got := n.k.Dump(); got != want {
		t.Fatalf("kernel before the stop =\n%s\nwant\n%s", got, want)
	}
	linksBefore, _ := n.k.Links()
	envBefore, _ := os.ReadFile(n.file)
	n.k.Calls()

	d.stop(t)
	if calls := n.k.Calls(); len(calls) != 0 {
		t.Errorf("the stop wrote to the kernel: %q", calls)
	}
	if got := n.k.Dump(); got != want {
		t.Errorf("kernel after the stop =\n%s\nwant it unchanged", got)
	}
	if linksAfter, _ := n.k.Links(); !reflect.DeepEqual(linksAfter, linksBefore) {
		t.Errorf("links after the stop %v, before %v", linksAfter, linksBefore)
	}
	if p := n.vxlanDeviceProblem(d.own, ownMAC(t, d.own)); p != "" {
		t.Errorf("flannel.1 after the stop: %s", p)
	}
	if _, _, ok := n.st.Get(d.own.Key()); !ok {
		t.Errorf("own lease %s gone from the store after the stop", d.own.Key())
	}
	if _, ok := n.rules.Config(); !ok {
		t.Error("the masquerade rules were removed by the stop")
	}
	if n.rules.Running() {
		t.Error("the rules' resync still runs after Run returned")
	}
	if envAfter, _ := os.ReadFile(n.file); string(envAfter) != string(envBefore) {
		t.Errorf("subnet.env changed by the stop:\n%s\nwas\n%s", envAfter, envBefore)
	}
	if resp, err := client.Get(url); err == nil {
		_ = resp.Body.Close()
		t.Error("the health server answers after Run returned")
	}
	if left := weftGoroutines(); left != "" {
		t.Errorf("goroutines left after Run returned:\n%s", left)
	}
	// Also by count (what is not weft code, such as the health server's
	// connections): back to where it was, given a moment to exit.
	after := runtime.NumGoroutine()
	for deadline := time.Now().Add(2 * time.Second); after > before && time.Now().Before(deadline); after = runtime.NumGoroutine() {
		time.Sleep(10 * time.Millisecond)
	}
	if after > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines after Run returned, %d before:\n%s", after, before, buf[:runtime.Stack(buf, true)])
	}
}

// TestFakeHostGW: host-gw routes each peer's subnet via its public address
// on eth0; a peer that is not on eth0's subnet gets nothing (and is logged
// once) until its lease gives an address that is; a deleted route is
// restored; subnet.env carries eth0's MTU.
func TestFakeHostGW(t *testing.T) {
	n := newFakeNode(t, `{"Network":"10.244.0.0/16","SubnetMin":"10.244.100.0","SubnetMax":"10.244.200.0","Backend":{"Type":"host-gw"}}`)
	n.lease("10.244.5.0/24", "192.168.100.15", "", "host-gw")
	far := n.lease("10.244.6.0/24", "192.168.200.16", "", "host-gw")
	n.lease("10.244.7.0/24", "192.168.100.17", "0a:00:00:00:00:07", "vxlan") // another backend
	d := n.start(t, nil)
	want := "route 10.244.5.0/24 via 192.168.100.15 dev eth0"
	if got := n.k.Dump(); got != want {
		t.Fatalf("kernel =\n%s\nwant\n%s", got, want)
	}
	if links, _ := n.k.Links(); len(links) != 2 {
		t.Errorf("host-gw made a device: %v", links)
	}
	if msg := "host-gw needs peers on a directly connected subnet, but 192.168.200.16 is not on any subnet of eth0"; strings.Count(d.log.String(), msg) != 1 {
		t.Errorf("the far peer is not logged once:\n%s", d.log.String())
	}
	env, err := subnetfile.Read(n.file)
	if err != nil || env.MTU != 1500 || env.Subnet != netip.PrefixFrom(d.own.Subnet.Addr().Next(), 24) {
		t.Errorf("subnet.env = %+v, %v", env, err)
	}

	// The far node moves onto eth0's subnet: it gets its route.
	n.st.Put(far, []byte(`{"PublicIP":"192.168.100.16","BackendType":"host-gw","BackendData":null}`), false)
	want2 := want + "\nroute 10.244.6.0/24 via 192.168.100.16 dev eth0"
	testenv.WaitFor(t, time.Second, "the peer on eth0's subnet routed", func() bool { return n.k.Dump() == want2 })

	if err := n.k.DeleteRoute(kernel.Route{Dst: netip.MustParsePrefix("10.244.5.0/24")}); err != nil {
		t.Fatal(err)
	}
	took := testenv.WaitFor(t, time.Second, "the deleted host-gw route restored", func() bool { return n.k.Dump() == want2 })
	t.Logf("restored in %v", took)
}

// TestFakeStatusNamesDeviceDifferences: weft status compares the backend's
// devices with the kernel as the reconciler's device pass would: in sync
// after a clean stop, then each change made while weftd is down named.
func TestFakeStatusNamesDeviceDifferences(t *testing.T) {
	n := newFakeNode(t, testNetConf("vxlan"))
	n.lease("10.244.5.0/24", "192.168.100.15", "0a:00:00:00:00:05", "vxlan")
	d := n.start(t, nil)
	d.stop(t)
	o, err := config.ParseOptions([]string{"--subnet-file", n.file, "--healthz-port", "0"},
		func(string) (string, bool) { return "", false }, nil)
	if err != nil {
		t.Fatal(err)
	}
	status := func() Report {
		t.Helper()
		log := slog.New(slog.DiscardHandler)
		rep, err := Status(t.Context(), o, StatusDeps{Store: n.st.Client(log), Backends: backends(), Kernel: n.k})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := status(); !rep.InSync {
		t.Fatalf("not in sync after a clean stop: %q", rep.Problems)
	}
	dev := n.k.MustLink(t, "flannel.1")
	for _, err := range []error{n.k.SetLinkMTU(dev.Index, 1400), n.k.SetLinkDown(dev.Index),
		n.k.AddAddr(dev.Index, netip.MustParsePrefix("10.99.0.1/24"))} {
		if err != nil {
			t.Fatal(err)
		}
	}
	rep := status()
	got := strings.Join(rep.Problems, "\n")
	for _, want := range []string{"device flannel.1 has MTU 1400, want 1450", "device flannel.1 is down",
		"device flannel.1 has a stray address 10.99.0.1/24"} {
		if !strings.Contains(got, want) {
			t.Errorf("problems lack %q:\n%s", want, got)
		}
	}
	if rep.InSync {
		t.Error("in sync with the device changed")
	}
}
