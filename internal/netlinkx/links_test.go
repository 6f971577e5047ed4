//go:build linux

package netlinkx

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/weft-net/weft/internal/kernel"
)

// The link and address half of kernel.Kernel on a real kernel, and the
// notices a device's changes make: a changed MTU, a removed address and a
// deleted link each reach the monitor.
func TestLinksAndTheirNotices(t *testing.T) {
	h, link := testNS(t)
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan kernel.Notice, 64)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	if err := h.Monitor(ctx, out, &wg); err != nil {
		t.Fatal(err)
	}
	l, err := h.LinkByName("flannel.1")
	if err != nil || l.Index != link || l.Kind != kernel.KindVXLAN || l.VXLAN == nil || l.VXLAN.VNI != 1 ||
		l.VXLAN.Local != netip.MustParseAddr("192.168.100.11") || l.VXLAN.Port != 8472 || l.VXLAN.Learning || !l.Up {
		t.Fatalf("LinkByName = %+v (vxlan %+v), %v", l, l.VXLAN, err)
	}
	if _, err := h.LinkByName("nope0"); !errors.Is(err, kernel.ErrLinkNotFound) {
		t.Fatalf("LinkByName of a missing link: %v, want ErrLinkNotFound", err)
	}
	mac := kernel.MAC{0x0a, 1, 2, 3, 4, 5}
	addr := netip.MustParsePrefix("10.244.3.0/32")
	for _, err := range []error{h.SetLinkMTU(link, 1400), h.SetLinkMAC(link, mac), h.AddAddr(link, addr), h.AddAddr(link, addr)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	l, _ = h.LinkByName("flannel.1")
	addrs, err := h.Addrs(link)
	if err != nil || l.MTU != 1400 || l.MAC != mac || !slices.Contains(addrs, addr) {
		t.Fatalf("after the writes: %+v, addresses %v, %v", l, addrs, err)
	}
	want := func(kind kernel.NoticeKind, match func(kernel.Notice) bool, what string) {
		t.Helper()
		for {
			n := recv(t, out, what)
			if n.Kind == kind && match(n) {
				return
			}
		}
	}
	want(kernel.LinkChanged, func(n kernel.Notice) bool { return n.LinkName == "flannel.1" && n.LinkIndex == link }, "flannel.1 changed")
	if err := h.DeleteAddr(link, addr); err != nil {
		t.Fatal(err)
	}
	if err := h.DeleteAddr(link, addr); err != nil {
		t.Fatalf("deleting an absent address: %v", err)
	}
	want(kernel.AddrChanged, func(n kernel.Notice) bool { return n.LinkIndex == link && n.Dst == addr }, "the address removed")
	spec := kernel.LinkSpec{Name: "weft-d0", Kind: kernel.KindVXLAN, MTU: 1300, MAC: mac,
		VXLAN: &kernel.VXLAN{VNI: 7, Dev: l.Index - 1, Local: netip.MustParseAddr("192.168.100.11"), Port: 4789, GBP: true}}
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	spec.VXLAN.Dev = eth0.Index
	if err := h.AddLink(spec); err != nil {
		t.Fatal(err)
	}
	d, err := h.LinkByName("weft-d0")
	if err != nil || d.Kind != kernel.KindVXLAN || d.MTU != 1300 || d.Up || d.MAC != mac || d.VXLAN == nil || *d.VXLAN != *spec.VXLAN {
		t.Fatalf("new vxlan = %+v (%+v), %v; want %+v", d, d.VXLAN, err, spec.VXLAN)
	}
	if err := h.SetLinkUp(d.Index); err != nil {
		t.Fatal(err)
	}
	if err := h.DeleteLink(d.Index); err != nil {
		t.Fatal(err)
	}
	want(kernel.LinkGone, func(n kernel.Notice) bool { return n.LinkName == "weft-d0" && n.LinkIndex == d.Index }, "weft-d0 deleted")
	if err := h.DeleteLink(d.Index); err != nil {
		t.Fatalf("deleting a deleted link: %v", err)
	}
	links, err := h.Links()
	if err != nil || !slices.ContainsFunc(links, func(l kernel.Link) bool { return l.Name == "eth0" && l.Kind == "veth" }) {
		t.Fatalf("Links = %+v, %v", links, err)
	}
}
