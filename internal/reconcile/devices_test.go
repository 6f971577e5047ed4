package reconcile

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/weft-net/weft/internal/kernel"
	"github.com/weft-net/weft/internal/kernel/kerneltest"
)

func vxlanSpec(name string) kernel.LinkSpec {
	return kernel.LinkSpec{Name: name, Kind: kernel.KindVXLAN, VXLAN: &kernel.VXLAN{VNI: 1}}
}

// The device pass makes a device's MTU, MAC, addresses and up flag what is
// desired, keeps the kernel's link-local address, writes nothing when all
// is as wanted, and rewrites the objects through a device that was down
// (the kernel flushed its routes without a notice each).
func TestDevicePass(t *testing.T) {
	ctx := context.Background()
	k := kerneltest.New()
	if err := k.AddLink(vxlanSpec("flannel.1")); err != nil {
		t.Fatal(err)
	}
	l, _ := k.LinkByName("flannel.1")
	ll := netip.MustParsePrefix("fe80::1/64")
	stray := netip.MustParsePrefix("10.99.0.1/24")
	for _, p := range []netip.Prefix{ll, stray} {
		if err := k.AddAddr(l.Index, p); err != nil {
			t.Fatal(err)
		}
	}
	r := New(k, slog.New(slog.DiscardHandler))
	r.SetScope(Scope{Networks: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}, Links: []int{l.Index}})
	mac := kernel.MAC{0x0a, 0, 0, 0, 0, 1}
	own := netip.MustParsePrefix("10.244.1.0/32")
	r.SetDevices([]kernel.Device{{Name: "flannel.1", MTU: 1450, MAC: mac, Addrs: []netip.Prefix{own}}})
	route := kernel.Route{Dst: netip.MustParsePrefix("10.244.2.0/24"), Gw: netip.MustParseAddr("10.244.2.0"), LinkIndex: l.Index, OnLink: true}
	r.SetPeer("p", Objects{Routes: []kernel.Route{route}})
	k.Calls()
	st, err := r.Apply(ctx)
	if err != nil || len(st.Missing) > 0 {
		t.Fatalf("Apply = %+v, %v", st, err)
	}
	got := k.Calls()
	want := []string{"mac 0a:00:00:00:00:01 flannel.1", "mtu 1450 flannel.1", "addr flannel.1 10.244.1.0/32",
		"deladdr flannel.1 10.99.0.1/24", "up flannel.1", "route " + route.String()}
	if !slices.Equal(got, want) {
		t.Fatalf("writes =\n%q\nwant\n%q", got, want)
	}
	if addrs, _ := k.Addrs(l.Index); !slices.Contains(addrs, ll) {
		t.Errorf("the link-local address went: %v", addrs)
	}
	if st.DeviceWrites != 5 {
		t.Errorf("DeviceWrites = %d, want 5", st.DeviceWrites)
	}
	// As wanted: a full pass writes nothing.
	if _, err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if c := k.Calls(); len(c) > 0 {
		t.Errorf("a second pass wrote %q", c)
	}
	// Down: set up, and the route through it written again.
	if err := k.SetLinkDown(l.Index); err != nil {
		t.Fatal(err)
	}
	k.Calls()
	if !r.MarkDevice("", l.Index) {
		t.Fatal("MarkDevice by index did not find flannel.1")
	}
	if _, err := r.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if c := k.Calls(); !slices.Equal(c, []string{"up flannel.1", "route " + route.String()}) {
		t.Errorf("after down: writes %q", c)
	}
	if r.MarkDevice("eth9", 999) {
		t.Error("MarkDevice claimed a device that is not desired")
	}
}

// A missing device is reported (again on every pass until it is back) and
// no object is written while it is missing; a device replaced under another
// index is reported once; SetDevices after the backend made it again takes
// the new index without reporting it.
func TestDeviceMissingAndReplaced(t *testing.T) {
	ctx := context.Background()
	k := kerneltest.New()
	r := New(k, slog.New(slog.DiscardHandler))
	r.SetScope(Scope{Networks: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}})
	r.SetDevices([]kernel.Device{{Name: "flannel.1", MTU: 1450}})
	r.SetPeer("p", Objects{Routes: []kernel.Route{{Dst: netip.MustParsePrefix("10.244.2.0/24"), LinkIndex: 7}}})
	for range 2 {
		st, _ := r.Apply(ctx)
		if !slices.Equal(st.Missing, []string{"flannel.1"}) || st.Added+st.Failed > 0 {
			t.Fatalf("Apply with the device missing = %+v", st)
		}
	}
	if c := k.Calls(); len(c) > 0 {
		t.Fatalf("wrote %q with the device missing", c)
	}
	if err := k.AddLink(vxlanSpec("flannel.1")); err != nil {
		t.Fatal(err)
	}
	r.SetDevices([]kernel.Device{{Name: "flannel.1", MTU: 1450}})
	if st, _ := r.Apply(ctx); len(st.Missing) > 0 {
		t.Fatalf("the device made again was reported %v", st.Missing)
	}
	first, _ := r.Device("flannel.1")
	// Someone deletes and makes it again: reported as replaced once.
	if err := k.DeleteLink(first); err != nil {
		t.Fatal(err)
	}
	if err := k.AddLink(vxlanSpec("flannel.1")); err != nil {
		t.Fatal(err)
	}
	r.MarkDevice("flannel.1", 0)
	if st, _ := r.Apply(ctx); !slices.Equal(st.Missing, []string{"flannel.1"}) {
		t.Fatalf("a replaced device: Missing = %v", st.Missing)
	}
	if idx, _ := r.Device("flannel.1"); idx == first {
		t.Error("the new index was not taken")
	}
	diffs, err := r.DiffDevices()
	if err != nil || !strings.Contains(strings.Join(diffs, "\n"), "has MTU 1500, want 1450") ||
		!strings.Contains(strings.Join(diffs, "\n"), "is down") {
		t.Errorf("DiffDevices = %q, %v", diffs, err)
	}
}
