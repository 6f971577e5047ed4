package kerneltest_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/kernel"
	"github.com/weft-net/weft/internal/kernel/kerneltest"
)

var (
	pfx = netip.MustParsePrefix
	ip  = netip.MustParseAddr
	mac = kernel.MAC{0x0a, 0, 0, 0, 0, 1}
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// A new fake has loopback; AddExternal and AddLink add links at the next
// index, a created link down with MTU 1500 unless given and a MAC unless it
// is a layer-3 device; a taken name is refused.
func TestLinks(t *testing.T) {
	f := kerneltest.New()
	lo := f.MustLink(t, "lo")
	if lo.Index != 1 || !lo.Up || lo.Kind != "" {
		t.Errorf("lo %+v", lo)
	}
	eth := f.AddExternal("eth0", 9000, true, pfx("192.168.1.1/24"))
	if l := f.MustLink(t, "eth0"); l.Index != eth || l.MTU != 9000 || !l.Up {
		t.Errorf("eth0 %+v", l)
	}
	if ds, _ := f.DefaultRouteLinks(); !slices.Equal(ds, []int{eth}) {
		t.Errorf("DefaultRouteLinks %v", ds)
	}
	must(t, f.AddLink(kernel.LinkSpec{Name: "flannel.1", Kind: kernel.KindVXLAN, VXLAN: &kernel.VXLAN{VNI: 1, Dev: eth}}))
	must(t, f.AddLink(kernel.LinkSpec{Name: "flannel.ipip", Kind: kernel.KindIPIP, MTU: 1480, IPIP: &kernel.IPIP{Local: ip("192.168.1.1")}}))
	must(t, f.AddTUN("flannel0"))
	vx, tun := f.MustLink(t, "flannel.1"), f.MustLink(t, "flannel0")
	if vx.Index <= eth || vx.Up || vx.MTU != 1500 || vx.MAC.IsZero() || vx.VXLAN == nil || vx.VXLAN.VNI != 1 {
		t.Errorf("flannel.1 %+v", vx)
	}
	if l := f.MustLink(t, "flannel.ipip"); l.MTU != 1480 || !l.MAC.IsZero() || l.IPIP == nil {
		t.Errorf("flannel.ipip %+v", l)
	}
	if tun.Kind != kernel.KindTUN || !tun.MAC.IsZero() {
		t.Errorf("flannel0 %+v", tun)
	}
	if got := f.Calls(); !slices.Equal(got, []string{"add vxlan flannel.1", "add ipip flannel.ipip", "add tun flannel0"}) {
		t.Errorf("calls %v", got)
	}
	if got := f.Calls(); len(got) != 0 {
		t.Errorf("Calls did not clear the log: %v", got)
	}
	if err := f.AddLink(kernel.LinkSpec{Name: "flannel.1", Kind: kernel.KindVXLAN}); err == nil {
		t.Error("a second flannel.1 was added")
	}
	if err := f.AddTUN("eth0"); err == nil {
		t.Error("a TUN named eth0 was added")
	}
	links, _ := f.Links()
	var names []string
	for _, l := range links {
		names = append(names, l.Name)
	}
	if !slices.Equal(names, []string{"lo", "eth0", "flannel.1", "flannel.ipip", "flannel0"}) {
		t.Errorf("Links by index: %v", names)
	}
	// Links are copies: changing one changes nothing in the kernel.
	links[2].VXLAN.VNI = 99
	vx.VXLAN.VNI = 98
	if f.MustLink(t, "flannel.1").VXLAN.VNI != 1 {
		t.Error("a returned link aliases the fake's")
	}
	must(t, f.SetLinkMTU(vx.Index, 1450))
	must(t, f.SetLinkMAC(vx.Index, mac))
	must(t, f.SetLinkUp(vx.Index))
	if l := f.MustLink(t, "flannel.1"); l.MTU != 1450 || l.MAC != mac || !l.Up {
		t.Errorf("after the sets: %+v", l)
	}
	must(t, f.SetLinkDown(vx.Index))
	if f.MustLink(t, "flannel.1").Up {
		t.Error("SetLinkDown left it up")
	}
	if got := f.Calls(); !slices.Equal(got, []string{"mtu 1450 flannel.1", "mac " + mac.String() + " flannel.1", "up flannel.1", "down flannel.1"}) {
		t.Errorf("calls %v", got)
	}
}

// Every write is idempotent: writing what is there succeeds and leaves one
// object; deleting what is absent succeeds and logs nothing.
func TestIdempotent(t *testing.T) {
	f := kerneltest.New()
	eth := f.AddExternal("eth0", 1500, true, pfx("192.168.1.1/24"))
	must(t, f.AddLink(kernel.LinkSpec{Name: "flannel.1", Kind: kernel.KindVXLAN}))
	dev := f.MustLink(t, "flannel.1").Index
	r := kernel.Route{Dst: pfx("10.244.2.0/24"), Gw: ip("10.244.2.0"), LinkIndex: dev, OnLink: true}
	n := kernel.Neigh{IP: ip("10.244.2.0"), MAC: mac, LinkIndex: dev}
	e := kernel.FDB{MAC: mac, Dst: ip("192.168.1.2"), LinkIndex: dev}
	a := pfx("10.244.1.0/32")
	for range 2 {
		must(t, f.ReplaceRoute(r))
		must(t, f.SetNeigh(n))
		must(t, f.SetFDB(e))
		must(t, f.AddAddr(dev, a))
	}
	routes, _ := f.ListRoutes([]netip.Prefix{pfx("10.244.0.0/16")})
	neighs, _ := f.ListNeighs(dev)
	fdb, _ := f.ListFDB(dev)
	addrs, _ := f.Addrs(dev)
	if !slices.Equal(routes, []kernel.Route{r}) || !slices.Equal(neighs, []kernel.Neigh{n}) || !slices.Equal(fdb, []kernel.FDB{e}) ||
		!slices.Equal(addrs, []netip.Prefix{a}) {
		t.Errorf("after writing twice: %v %v %v %v", routes, neighs, fdb, addrs)
	}
	// Replacing a route to the same destination replaces it.
	r2 := kernel.Route{Dst: pfx("10.244.2.0/24"), Gw: ip("192.168.1.2"), LinkIndex: eth}
	must(t, f.ReplaceRoute(r2))
	if routes, _ := f.ListRoutes([]netip.Prefix{pfx("10.244.0.0/16")}); !slices.Equal(routes, []kernel.Route{r2}) {
		t.Errorf("after replacing: %v", routes)
	}
	if got := f.Dump(); got != "fdb 0a:00:00:00:00:01 dst 192.168.1.2 dev flannel.1\n"+
		"neigh 10.244.2.0 lladdr 0a:00:00:00:00:01 dev flannel.1\n"+
		"route 10.244.2.0/24 via 192.168.1.2 dev eth0" {
		t.Errorf("Dump:\n%s", got)
	}
	f.Calls()

	absent := kernel.Route{Dst: pfx("10.244.9.0/24"), LinkIndex: dev}
	must(t, f.DeleteRoute(absent))
	must(t, f.DeleteRoute(kernel.Route{Dst: pfx("10.244.2.0/24"), Blackhole: true})) // another kind of route
	must(t, f.DeleteNeigh(kernel.Neigh{IP: ip("10.244.9.0"), LinkIndex: dev}))
	must(t, f.DeleteFDB(kernel.FDB{MAC: kernel.MAC{0x0a, 9}, LinkIndex: dev}))
	must(t, f.DeleteAddr(dev, pfx("10.244.9.0/32")))
	must(t, f.DeleteLink(999))
	if got := f.Calls(); len(got) != 0 {
		t.Errorf("deleting absent objects wrote %v", got)
	}
	if routes, _ := f.ListRoutes([]netip.Prefix{pfx("10.244.0.0/16")}); len(routes) != 1 {
		t.Errorf("deleting a blackhole route removed a gateway route: %v", routes)
	}
}

// ListRoutes returns the routes inside the networks (not a route to a
// network's supernet, not others); blackhole routes need no link.
func TestListRoutes(t *testing.T) {
	f := kerneltest.New()
	eth := f.AddExternal("eth0", 1500, true, pfx("192.168.1.1/24"))
	in := kernel.Route{Dst: pfx("10.244.2.0/24"), Gw: ip("192.168.1.2"), LinkIndex: eth}
	whole := kernel.Route{Dst: pfx("10.244.0.0/16"), LinkIndex: eth}
	super := kernel.Route{Dst: pfx("10.0.0.0/8"), LinkIndex: eth}
	hole := kernel.Route{Dst: pfx("10.244.1.0/24"), Blackhole: true}
	v6 := kernel.Route{Dst: pfx("fd00:10:244:2::/64"), Gw: ip("fd00::2"), LinkIndex: eth}
	for _, r := range []kernel.Route{in, whole, super, hole, v6} {
		must(t, f.ReplaceRoute(r))
	}
	got, _ := f.ListRoutes([]netip.Prefix{pfx("10.244.0.0/16")})
	slices.SortFunc(got, func(a, b kernel.Route) int { return a.Dst.Addr().Compare(b.Dst.Addr()) })
	if want := []kernel.Route{whole, hole, in}; !slices.EqualFunc(got, want, func(a, b kernel.Route) bool { return a == b }) {
		t.Errorf("ListRoutes = %v, want %v", got, want)
	}
	if got, _ := f.ListRoutes([]netip.Prefix{pfx("fd00:10:244::/56")}); !slices.Equal(got, []kernel.Route{v6}) {
		t.Errorf("IPv6 ListRoutes = %v", got)
	}
	if to, err := f.RouteTo(ip("192.168.1.7")); err != nil || to != eth {
		t.Errorf("RouteTo on-link = %d, %v", to, err)
	}
	if to, err := f.RouteTo(ip("8.8.8.8")); err != nil || to != eth {
		t.Errorf("RouteTo via default = %d, %v", to, err)
	}
	if _, err := kerneltest.New().RouteTo(ip("8.8.8.8")); err == nil {
		t.Error("RouteTo without a default route succeeded")
	}
}

// DeleteLink removes the link with its addresses, the routes through it,
// its neighbours and FDB entries, and its default route; others stay.
func TestDeleteLinkTakesItsObjects(t *testing.T) {
	f := kerneltest.New()
	eth := f.AddExternal("eth0", 1500, true, pfx("192.168.1.1/24"))
	must(t, f.AddLink(kernel.LinkSpec{Name: "flannel.1", Kind: kernel.KindVXLAN}))
	must(t, f.AddLink(kernel.LinkSpec{Name: "flannel-v6.1", Kind: kernel.KindVXLAN}))
	dev, dev6 := f.MustLink(t, "flannel.1").Index, f.MustLink(t, "flannel-v6.1").Index
	must(t, f.AddAddr(dev, pfx("10.244.1.0/32")))
	must(t, f.ReplaceRoute(kernel.Route{Dst: pfx("10.244.2.0/24"), Gw: ip("10.244.2.0"), LinkIndex: dev, OnLink: true}))
	must(t, f.SetNeigh(kernel.Neigh{IP: ip("10.244.2.0"), MAC: mac, LinkIndex: dev}))
	must(t, f.SetFDB(kernel.FDB{MAC: mac, Dst: ip("192.168.1.2"), LinkIndex: dev}))
	keepRoute := kernel.Route{Dst: pfx("10.244.3.0/24"), Gw: ip("192.168.1.3"), LinkIndex: eth}
	must(t, f.ReplaceRoute(keepRoute))
	must(t, f.ReplaceRoute(kernel.Route{Dst: pfx("10.244.1.0/24"), Blackhole: true}))
	must(t, f.SetNeigh(kernel.Neigh{IP: ip("fd00:10:244:2::"), MAC: mac, LinkIndex: dev6}))
	must(t, f.SetFDB(kernel.FDB{MAC: mac, Dst: ip("fd00::2"), LinkIndex: dev6}))

	must(t, f.DeleteLink(dev))
	if _, err := f.LinkByName("flannel.1"); !errors.Is(err, kernel.ErrLinkNotFound) {
		t.Errorf("LinkByName after DeleteLink: %v", err)
	}
	if _, err := f.Addrs(dev); !errors.Is(err, kernel.ErrLinkNotFound) {
		t.Errorf("Addrs of the deleted link: %v", err)
	}
	if n, _ := f.ListNeighs(dev); len(n) != 0 {
		t.Errorf("neighbours left on the deleted link: %v", n)
	}
	if e, _ := f.ListFDB(dev); len(e) != 0 {
		t.Errorf("FDB entries left on the deleted link: %v", e)
	}
	want := "fdb 0a:00:00:00:00:01 dst fd00::2 dev flannel-v6.1\n" +
		"neigh fd00:10:244:2:: lladdr 0a:00:00:00:00:01 dev flannel-v6.1\n" +
		"route 10.244.3.0/24 via 192.168.1.3 dev eth0\n" +
		"route blackhole 10.244.1.0/24"
	if got := f.Dump(); got != want {
		t.Errorf("after deleting flannel.1:\n%s\nwant:\n%s", got, want)
	}
	must(t, f.DeleteLink(eth))
	if ds, _ := f.DefaultRouteLinks(); len(ds) != 0 {
		t.Errorf("DefaultRouteLinks after deleting eth0: %v", ds)
	}
	if got := f.Dump(); strings.Contains(got, "eth0") || strings.Contains(got, "#") {
		t.Errorf("after deleting eth0:\n%s", got)
	}
	// The index is not reused.
	must(t, f.AddLink(kernel.LinkSpec{Name: "flannel.1", Kind: kernel.KindVXLAN}))
	if l := f.MustLink(t, "flannel.1"); l.Index == dev || l.Index == eth {
		t.Errorf("a new link got a deleted link's index %d", l.Index)
	}
}

// A Monitor receives a notice for every change made through the fake, in
// order: links added or changed, addresses added or removed, routes,
// neighbours, FDB entries and links deleted; writing what is already there
// and adding the other objects send none.
func TestMonitorOrder(t *testing.T) {
	f := kerneltest.New()
	eth := f.AddExternal("eth0", 1500, true, pfx("192.168.1.1/24"))
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	out := make(chan kernel.Notice) // unbuffered: writers must not block on it
	must(t, f.Monitor(ctx, out, &wg))

	must(t, f.AddLink(kernel.LinkSpec{Name: "flannel.1", Kind: kernel.KindVXLAN}))
	dev := f.MustLink(t, "flannel.1").Index
	must(t, f.SetLinkMTU(dev, 1450))
	a := pfx("10.244.1.0/32")
	must(t, f.AddAddr(dev, a))
	must(t, f.AddAddr(dev, a)) // already there: no notice
	must(t, f.DeleteAddr(dev, a))
	must(t, f.DeleteAddr(dev, a)) // absent: no notice
	r := kernel.Route{Dst: pfx("10.244.2.0/24"), Gw: ip("10.244.2.0"), LinkIndex: dev, OnLink: true}
	must(t, f.ReplaceRoute(r))
	must(t, f.DeleteRoute(r))
	n := kernel.Neigh{IP: ip("10.244.2.0"), MAC: mac, LinkIndex: dev}
	must(t, f.SetNeigh(n))
	must(t, f.DeleteNeigh(n))
	e := kernel.FDB{MAC: mac, Dst: ip("192.168.1.2"), LinkIndex: dev}
	must(t, f.SetFDB(e))
	must(t, f.DeleteFDB(e))
	must(t, f.SetLinkDown(eth))
	must(t, f.DeleteLink(dev))
	f.Overflow()

	want := []kernel.Notice{
		{Kind: kernel.LinkChanged, LinkIndex: dev, LinkName: "flannel.1"},
		{Kind: kernel.LinkChanged, LinkIndex: dev, LinkName: "flannel.1"},
		{Kind: kernel.AddrChanged, LinkIndex: dev, Dst: a},
		{Kind: kernel.AddrChanged, LinkIndex: dev, Dst: a},
		{Kind: kernel.RouteGone, LinkIndex: dev, Dst: r.Dst},
		{Kind: kernel.NeighGone, LinkIndex: dev, IP: n.IP},
		{Kind: kernel.FDBGone, LinkIndex: dev, MAC: mac},
		{Kind: kernel.LinkChanged, LinkIndex: eth, LinkName: "eth0"},
		{Kind: kernel.LinkGone, LinkIndex: dev, LinkName: "flannel.1"},
		{Kind: kernel.Lost},
	}
	for i, w := range want {
		select {
		case got := <-out:
			if w.Kind == kernel.Lost {
				if got.Kind != kernel.Lost || got.Err == nil {
					t.Errorf("notice %d: %+v, want Lost with an error", i, got)
				}
				continue
			}
			if got != w {
				t.Errorf("notice %d: %+v, want %+v", i, got, w)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("notice %d (%+v) never came", i, w)
		}
	}
	select {
	case got := <-out:
		t.Errorf("an extra notice %+v", got)
	case <-time.After(20 * time.Millisecond):
	}
	cancel()
	wg.Wait() // the monitor's goroutine ends with its context
	if err := f.Monitor(ctx, out, &wg); err == nil {
		t.Error("Monitor with an ended context succeeded")
	}
	// Writes after the monitor ended still succeed.
	must(t, f.AddLink(kernel.LinkSpec{Name: "flannel.2", Kind: kernel.KindVXLAN}))
}

// Two monitors each get every notice.
func TestMonitorFanOut(t *testing.T) {
	f := kerneltest.New()
	var wg sync.WaitGroup
	a, b := make(chan kernel.Notice, 4), make(chan kernel.Notice, 4)
	must(t, f.Monitor(t.Context(), a, &wg))
	must(t, f.Monitor(t.Context(), b, &wg))
	must(t, f.AddTUN("flannel0"))
	for _, ch := range []chan kernel.Notice{a, b} {
		select {
		case n := <-ch:
			if n.Kind != kernel.LinkChanged || n.LinkName != "flannel0" {
				t.Errorf("notice %+v", n)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a monitor got nothing")
		}
	}
}

// FailOn fails the writes whose log line starts with the prefix, wrapping
// the error and changing nothing, until cleared; other writes go on.
func TestFailOn(t *testing.T) {
	f := kerneltest.New()
	eth := f.AddExternal("eth0", 1500, true)
	f.FailOn("route 10.244.2.", syscall.EPERM)
	f.FailOn("add ipip", syscall.EOPNOTSUPP)
	r := kernel.Route{Dst: pfx("10.244.2.0/24"), Gw: ip("192.168.1.2"), LinkIndex: eth}
	err := f.ReplaceRoute(r)
	if !errors.Is(err, syscall.EPERM) || !strings.Contains(err.Error(), "route 10.244.2.0/24 via 192.168.1.2") {
		t.Errorf("ReplaceRoute = %v, want EPERM naming the route", err)
	}
	if err := f.AddLink(kernel.LinkSpec{Name: "flannel.ipip", Kind: kernel.KindIPIP}); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Errorf("AddLink ipip = %v", err)
	}
	if _, err := f.LinkByName("flannel.ipip"); !errors.Is(err, kernel.ErrLinkNotFound) {
		t.Errorf("a failed AddLink made the link: %v", err)
	}
	other := kernel.Route{Dst: pfx("10.244.3.0/24"), Gw: ip("192.168.1.3"), LinkIndex: eth}
	must(t, f.ReplaceRoute(other))
	must(t, f.AddLink(kernel.LinkSpec{Name: "flannel.1", Kind: kernel.KindVXLAN}))
	if got := f.Dump(); got != "route 10.244.3.0/24 via 192.168.1.3 dev eth0" {
		t.Errorf("Dump:\n%s", got)
	}
	if got := f.Calls(); !slices.Equal(got, []string{"route 10.244.3.0/24 via 192.168.1.3 dev #2", "add vxlan flannel.1"}) {
		t.Errorf("calls %v: failed writes must not be logged", got)
	}
	f.FailOn("route 10.244.2.", nil)
	must(t, f.ReplaceRoute(r))
	if err := f.AddLink(kernel.LinkSpec{Name: "flannel.ipip", Kind: kernel.KindIPIP}); err == nil {
		t.Error("clearing one prefix cleared the other")
	}
}

// Every error about a missing link wraps kernel.ErrLinkNotFound.
func TestLinkNotFound(t *testing.T) {
	f := kerneltest.New()
	const gone = 42
	for name, err := range map[string]error{
		"LinkByName":   func() error { _, err := f.LinkByName("flannel.1"); return err }(),
		"SetLinkMTU":   f.SetLinkMTU(gone, 1450),
		"SetLinkMAC":   f.SetLinkMAC(gone, mac),
		"SetLinkUp":    f.SetLinkUp(gone),
		"Addrs":        func() error { _, err := f.Addrs(gone); return err }(),
		"AddAddr":      f.AddAddr(gone, pfx("10.244.1.0/32")),
		"ReplaceRoute": f.ReplaceRoute(kernel.Route{Dst: pfx("10.244.2.0/24"), LinkIndex: gone}),
		"SetNeigh":     f.SetNeigh(kernel.Neigh{IP: ip("10.244.2.0"), LinkIndex: gone}),
		"SetFDB":       f.SetFDB(kernel.FDB{MAC: mac, Dst: ip("192.168.1.2"), LinkIndex: gone}),
	} {
		if !errors.Is(err, kernel.ErrLinkNotFound) {
			t.Errorf("%s on a missing link: %v, want ErrLinkNotFound", name, err)
		}
	}
	if got := f.Calls(); len(got) != 0 {
		t.Errorf("failed writes logged %v", got)
	}
	if err := f.ReplaceRoute(kernel.Route{Dst: pfx("10.244.1.0/24"), Blackhole: true}); err != nil {
		t.Errorf("a blackhole route needs no link: %v", err)
	}
}
