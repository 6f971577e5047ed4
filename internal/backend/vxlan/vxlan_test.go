//go:build linux

package vxlan

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/kernel"
	"github.com/weft-net/weft/internal/kernel/kerneltest"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/reconcile"
)

var (
	public   = netip.MustParseAddr("192.168.1.1")
	public6  = netip.MustParseAddr("fd00::1")
	extAddrs = []netip.Prefix{netip.MustParsePrefix("192.168.1.1/24"), netip.MustParsePrefix("fd00::1/64")}
)

const (
	v4only = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"%s}}`
	dual   = `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"%s}}`
)

// conf fills a net-conf.json template's backend options.
func conf(tmpl, opts string) string { return strings.ReplaceAll(tmpl, "%s", opts) }

// deps builds the dependencies over f, whose external interface eth0
// (192.168.1.1/24, fd00::1/64, MTU 1500) it adds.
func deps(t *testing.T, f *kerneltest.Fake, netconf string) backend.Deps {
	t.Helper()
	nc, _, err := config.ParseNetConf([]byte(netconf))
	if err != nil {
		t.Fatal(err)
	}
	ext := f.AddExternal("eth0", 1500, true, extAddrs...)
	f.Calls()
	return backend.Deps{Net: nc, Kernel: f, Logger: slog.New(slog.DiscardHandler),
		External: backend.External{Name: "eth0", Index: ext, MTU: 1500, Addrs: extAddrs, PublicIP: public, PublicIPv6: public6}}
}

func newVXLAN(t *testing.T, d backend.Deps) *VXLAN {
	t.Helper()
	b, err := New(d)
	if err != nil {
		t.Fatal(err)
	}
	return b.(*VXLAN)
}

func ownLease() lease.Lease {
	return lease.Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24"), IPv6Subnet: netip.MustParsePrefix("fd00:10:244:1::/64"),
		Attrs: lease.Attrs{PublicIP: public, PublicIPv6: public6, BackendType: Name}}
}

// Ensure creates flannel.<VNI> with the options' VNI, port, learning and
// GBP, local = the public address, dev = the external interface, the MTU and
// a MAC that is the one the lease publishes. It writes nothing else (the
// addresses and up flag are the reconciler's), and a second Ensure nothing.
func TestEnsureCreatesDevice(t *testing.T) {
	for _, tc := range []struct {
		name, opts, dev string
		want            kernel.VXLAN // Dev and Local filled in below
	}{
		{"defaults", "", "flannel.1", kernel.VXLAN{VNI: 1, Port: 8472}},
		{"options", `,"VNI":42,"Port":4789,"Learning":true,"GBP":true`, "flannel.42", kernel.VXLAN{VNI: 42, Port: 4789, Learning: true, GBP: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := kerneltest.New()
			d := deps(t, f, conf(v4only, tc.opts))
			v := newVXLAN(t, d)
			a, err := v.Attrs(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if err := v.Ensure(t.Context(), ownLease()); err != nil {
				t.Fatal(err)
			}
			if got := f.Calls(); !slices.Equal(got, []string{"add vxlan " + tc.dev}) {
				t.Errorf("Ensure wrote %v, want only the device", got)
			}
			l := f.MustLink(t, tc.dev)
			want := tc.want
			want.Dev, want.Local = d.External.Index, public
			if l.Kind != kernel.KindVXLAN || l.VXLAN == nil || *l.VXLAN != want || l.MTU != 1450 {
				t.Fatalf("device %+v (vxlan %+v), want kind vxlan %+v mtu 1450", l, l.VXLAN, want)
			}
			var data Data
			if err := json.Unmarshal(a.BackendData, &data); err != nil || data.VNI != want.VNI || data.VtepMAC != l.MAC.String() {
				t.Errorf("lease data %s (%v), want VNI %d VtepMAC %s", a.BackendData, err, want.VNI, l.MAC)
			}
			if l.MAC[0]&0x01 != 0 || l.MAC[0]&0x02 == 0 {
				t.Errorf("MAC %s is not a unicast, locally administered address", l.MAC)
			}
			if addrs, _ := f.Addrs(l.Index); len(addrs) != 0 || l.Up {
				t.Errorf("Ensure configured the device: addresses %v, up %v", addrs, l.Up)
			}
			if !slices.Equal(v.Links(), []int{l.Index}) {
				t.Errorf("Links %v, want [%d]", v.Links(), l.Index)
			}
			if err := v.Ensure(t.Context(), ownLease()); err != nil {
				t.Fatal(err)
			}
			if got := f.Calls(); len(got) != 0 {
				t.Errorf("second Ensure wrote %v", got)
			}
		})
	}
}

// The MAC is stable without state: two fresh kernels give a node the same
// MAC for the same public address (another address, another MAC); an
// existing device's MAC is kept, also when the device must be recreated.
func TestStableMAC(t *testing.T) {
	mac := func(pub netip.Addr) kernel.MAC {
		f := kerneltest.New()
		d := deps(t, f, conf(v4only, ""))
		d.External.PublicIP = pub
		v := newVXLAN(t, d)
		if err := v.Ensure(t.Context(), ownLease()); err != nil {
			t.Fatal(err)
		}
		return f.MustLink(t, "flannel.1").MAC
	}
	m1, m2 := mac(public), mac(public)
	if m1 != m2 || m1.IsZero() {
		t.Errorf("MACs %s and %s for the same public address, want one non-zero", m1, m2)
	}
	if m3 := mac(netip.MustParseAddr("192.168.1.2")); m3 == m1 {
		t.Errorf("MAC %s for two public addresses", m3)
	}

	kept := kernel.MAC{0x0a, 0x11, 0x22, 0x33, 0x44, 0x55}
	for _, tc := range []struct {
		name  string
		vni   int
		calls []string
	}{
		{"compatible", 1, nil},
		{"recreated", 2, []string{"del flannel.1", "add vxlan flannel.1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := kerneltest.New()
			d := deps(t, f, conf(v4only, ""))
			if err := f.AddLink(kernel.LinkSpec{Name: "flannel.1", Kind: kernel.KindVXLAN, MAC: kept,
				VXLAN: &kernel.VXLAN{VNI: tc.vni, Dev: d.External.Index, Local: public, Port: 8472}}); err != nil {
				t.Fatal(err)
			}
			f.Calls()
			v := newVXLAN(t, d)
			a, err := v.Attrs(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(a.BackendData), kept.String()) {
				t.Errorf("lease data %s, want the existing MAC %s", a.BackendData, kept)
			}
			if err := v.Ensure(t.Context(), ownLease()); err != nil {
				t.Fatal(err)
			}
			if got := f.Calls(); !slices.Equal(got, tc.calls) {
				t.Errorf("Ensure wrote %v, want %v", got, tc.calls)
			}
			if l := f.MustLink(t, "flannel.1"); l.MAC != kept || v.Devices()[0].MAC != kept {
				t.Errorf("device MAC %s, desired %s; want %s kept", l.MAC, v.Devices()[0].MAC, kept)
			}
		})
	}
}

// A device of the name whose settings differ (VNI, local address, underlay
// device, port, learning, GBP, or not a vxlan device at all) is deleted and
// made again with the right ones; a port of 0 in the options accepts any.
func TestReplacesIncompatibleDevice(t *testing.T) {
	f0 := kerneltest.New()
	ext := deps(t, f0, conf(v4only, "")).External.Index // the same index in every fresh fake
	good := kernel.VXLAN{VNI: 1, Dev: ext, Local: public, Port: 8472}
	with := func(change func(*kernel.VXLAN)) *kernel.VXLAN { x := good; change(&x); return &x }
	for _, tc := range []struct {
		name     string
		opts     string
		existing kernel.LinkSpec
		replaced bool
	}{
		{"same", "", kernel.LinkSpec{Kind: kernel.KindVXLAN, VXLAN: &good}, false},
		{"other VNI", "", kernel.LinkSpec{Kind: kernel.KindVXLAN, VXLAN: with(func(x *kernel.VXLAN) { x.VNI = 2 })}, true},
		{"other local", "", kernel.LinkSpec{Kind: kernel.KindVXLAN, VXLAN: with(func(x *kernel.VXLAN) { x.Local = netip.MustParseAddr("192.168.1.9") })}, true},
		{"other dev", "", kernel.LinkSpec{Kind: kernel.KindVXLAN, VXLAN: with(func(x *kernel.VXLAN) { x.Dev = 1 })}, true},
		{"other port", "", kernel.LinkSpec{Kind: kernel.KindVXLAN, VXLAN: with(func(x *kernel.VXLAN) { x.Port = 4789 })}, true},
		{"any port", `,"Port":0`, kernel.LinkSpec{Kind: kernel.KindVXLAN, VXLAN: with(func(x *kernel.VXLAN) { x.Port = 4789 })}, false},
		{"learning", "", kernel.LinkSpec{Kind: kernel.KindVXLAN, VXLAN: with(func(x *kernel.VXLAN) { x.Learning = true })}, true},
		{"gbp", "", kernel.LinkSpec{Kind: kernel.KindVXLAN, VXLAN: with(func(x *kernel.VXLAN) { x.GBP = true })}, true},
		{"not vxlan", "", kernel.LinkSpec{Kind: kernel.KindIPIP, IPIP: &kernel.IPIP{Local: public}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := kerneltest.New()
			d := deps(t, f, conf(v4only, tc.opts))
			spec := tc.existing
			spec.Name = "flannel.1"
			if err := f.AddLink(spec); err != nil {
				t.Fatal(err)
			}
			old := f.MustLink(t, "flannel.1")
			f.Calls()
			v := newVXLAN(t, d)
			if err := v.Ensure(t.Context(), ownLease()); err != nil {
				t.Fatal(err)
			}
			l := f.MustLink(t, "flannel.1")
			calls := f.Calls()
			if !tc.replaced {
				if len(calls) != 0 || l.Index != old.Index {
					t.Errorf("a compatible device was changed: %v", calls)
				}
				return
			}
			if want := []string{"del flannel.1", "add vxlan flannel.1"}; !slices.Equal(calls, want) {
				t.Errorf("calls %v, want %v", calls, want)
			}
			if l.Index == old.Index || l.VXLAN == nil || *l.VXLAN != good {
				t.Errorf("device after Ensure %+v (vxlan %+v), want a new one %+v", l, l.VXLAN, good)
			}
			if !slices.Equal(v.Links(), []int{l.Index}) {
				t.Errorf("Links %v, want the new device's [%d]", v.Links(), l.Index)
			}
		})
	}
}

// Devices: the MTU (external - 50, or - 70 with IPv6 on, or the option),
// the MAC, and the own subnet's .0 as /32 (/128 on flannel-v6.1); the
// reconciler applies them.
func TestDevices(t *testing.T) {
	own := ownLease()
	for _, tc := range []struct {
		name, conf string
		mtu        int
		addrs      map[string]string
	}{
		{"ipv4", conf(v4only, ""), 1450, map[string]string{"flannel.1": "10.244.1.0/32"}},
		{"dual stack", conf(dual, ""), 1430, map[string]string{"flannel.1": "10.244.1.0/32", "flannel-v6.1": "fd00:10:244:1::/128"}},
		{"MTU option", conf(v4only, `,"MTU":1400`), 1400, map[string]string{"flannel.1": "10.244.1.0/32"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := kerneltest.New()
			v := newVXLAN(t, deps(t, f, tc.conf))
			for _, d := range v.Devices() {
				if len(d.Addrs) != 0 {
					t.Errorf("before Ensure %s has addresses %v", d.Name, d.Addrs)
				}
			}
			if err := v.Ensure(t.Context(), own); err != nil {
				t.Fatal(err)
			}
			if v.MTU() != tc.mtu {
				t.Errorf("MTU %d, want %d", v.MTU(), tc.mtu)
			}
			ds := v.Devices()
			if len(ds) != len(tc.addrs) {
				t.Fatalf("Devices %+v, want %d", ds, len(tc.addrs))
			}
			for _, d := range ds {
				l := f.MustLink(t, d.Name)
				want := kernel.Device{Name: d.Name, MTU: tc.mtu, MAC: l.MAC, Addrs: []netip.Prefix{netip.MustParsePrefix(tc.addrs[d.Name])}}
				if !d.Equal(want) || d.MAC.IsZero() {
					t.Errorf("device %+v, want %+v", d, want)
				}
				if l.VXLAN.Local != map[bool]netip.Addr{false: public, true: public6}[strings.HasPrefix(d.Name, "flannel-v6")] {
					t.Errorf("%s local %s", d.Name, l.VXLAN.Local)
				}
			}
			if len(ds) == 2 && ds[0].MAC == ds[1].MAC {
				t.Errorf("both devices have MAC %s", ds[0].MAC)
			}

			// Someone changes the MAC and the MTU; the reconciler restores
			// them and adds the addresses.
			l := f.MustLink(t, ds[0].Name)
			if err := f.SetLinkMAC(l.Index, kernel.MAC{0x02, 1, 2, 3, 4, 5}); err != nil {
				t.Fatal(err)
			}
			if err := f.SetLinkMTU(l.Index, 9000); err != nil {
				t.Fatal(err)
			}
			rec := reconcile.New(f, slog.New(slog.DiscardHandler))
			rec.SetDevices(ds)
			if st, err := rec.Apply(t.Context()); err != nil || len(st.Missing) != 0 {
				t.Fatalf("Apply: %+v %v", st, err)
			}
			for _, d := range ds {
				l := f.MustLink(t, d.Name)
				addrs, _ := f.Addrs(l.Index)
				if l.MAC != d.MAC || l.MTU != d.MTU || !l.Up || !slices.Equal(addrs, d.Addrs) {
					t.Errorf("%s after the reconciler: %+v %v, want %+v up", d.Name, l, addrs, d)
				}
			}
		})
	}
}

func peerLease(subnet, subnet6, ip, ip6, data, data6 string) lease.Lease {
	l := lease.Lease{Attrs: lease.Attrs{BackendType: Name}}
	if subnet != "" {
		l.Subnet = netip.MustParsePrefix(subnet)
	}
	if subnet6 != "" {
		l.IPv6Subnet = netip.MustParsePrefix(subnet6)
	}
	if ip != "" {
		l.Attrs.PublicIP = netip.MustParseAddr(ip)
	}
	if ip6 != "" {
		l.Attrs.PublicIPv6 = netip.MustParseAddr(ip6)
	}
	if data != "" {
		l.Attrs.BackendData = json.RawMessage(data)
	}
	if data6 != "" {
		l.Attrs.BackendV6Data = json.RawMessage(data6)
	}
	return l
}

const (
	peerMAC  = "22:56:a3:21:8b:8d"
	peerMAC6 = "22:56:a3:21:8b:8e"
	peerData = `{"VNI":1,"VtepMAC":"` + peerMAC + `"}`
	peerV6   = `{"VNI":1,"VtepMAC":"` + peerMAC6 + `"}`
)

// A peer is a neighbour <subnet>.0 -> VTEP MAC, an FDB entry VTEP MAC ->
// public address and a route <subnet> via <subnet>.0 onlink, per family;
// with DirectRouting a directly connected peer is a plain route via its
// public address on the external interface instead.
func TestPeer(t *testing.T) {
	mac, _ := kernel.ParseMAC(peerMAC)
	mac6, _ := kernel.ParseMAC(peerMAC6)
	ip := netip.MustParseAddr
	pfx := netip.MustParsePrefix

	t.Run("ipv4", func(t *testing.T) {
		f := kerneltest.New()
		v := newVXLAN(t, deps(t, f, conf(v4only, "")))
		if err := v.Ensure(t.Context(), ownLease()); err != nil {
			t.Fatal(err)
		}
		dev := f.MustLink(t, "flannel.1").Index
		f.Calls()
		got, err := v.Peer(ownLease(), peerLease("10.244.2.0/24", "", "192.168.1.2", "", peerData, ""))
		want := reconcile.Objects{
			Routes: []kernel.Route{{Dst: pfx("10.244.2.0/24"), Gw: ip("10.244.2.0"), LinkIndex: dev, OnLink: true}},
			Neighs: []kernel.Neigh{{IP: ip("10.244.2.0"), MAC: mac, LinkIndex: dev}},
			FDB:    []kernel.FDB{{MAC: mac, Dst: ip("192.168.1.2"), LinkIndex: dev}},
		}
		if err != nil || !sameObjects(got, want) {
			t.Errorf("Peer = %+v, %v; want %+v", got, err, want)
		}
		if calls := f.Calls(); len(calls) != 0 {
			t.Errorf("Peer wrote %v", calls)
		}
	})

	t.Run("dual stack", func(t *testing.T) {
		f := kerneltest.New()
		v := newVXLAN(t, deps(t, f, conf(dual, "")))
		if err := v.Ensure(t.Context(), ownLease()); err != nil {
			t.Fatal(err)
		}
		dev, dev6 := f.MustLink(t, "flannel.1").Index, f.MustLink(t, "flannel-v6.1").Index
		got, err := v.Peer(ownLease(), peerLease("10.244.2.0/24", "fd00:10:244:2::/64", "192.168.1.2", "fd00::2", peerData, peerV6))
		want := reconcile.Objects{
			Routes: []kernel.Route{{Dst: pfx("10.244.2.0/24"), Gw: ip("10.244.2.0"), LinkIndex: dev, OnLink: true},
				{Dst: pfx("fd00:10:244:2::/64"), Gw: ip("fd00:10:244:2::"), LinkIndex: dev6, OnLink: true}},
			Neighs: []kernel.Neigh{{IP: ip("10.244.2.0"), MAC: mac, LinkIndex: dev}, {IP: ip("fd00:10:244:2::"), MAC: mac6, LinkIndex: dev6}},
			FDB:    []kernel.FDB{{MAC: mac, Dst: ip("192.168.1.2"), LinkIndex: dev}, {MAC: mac6, Dst: ip("fd00::2"), LinkIndex: dev6}},
		}
		if err != nil || !sameObjects(got, want) {
			t.Errorf("Peer = %+v, %v; want %+v", got, err, want)
		}
		// A peer with only IPv4 gets only the IPv4 objects.
		got, err = v.Peer(ownLease(), peerLease("10.244.3.0/24", "", "192.168.1.3", "", peerData, ""))
		if err != nil || len(got.Routes) != 1 || got.Routes[0].LinkIndex != dev || len(got.Neighs) != 1 || len(got.FDB) != 1 {
			t.Errorf("IPv4-only peer: %+v, %v", got, err)
		}
	})

	t.Run("DirectRouting", func(t *testing.T) {
		f := kerneltest.New()
		d := deps(t, f, conf(v4only, `,"DirectRouting":true`))
		v := newVXLAN(t, d)
		if err := v.Ensure(t.Context(), ownLease()); err != nil {
			t.Fatal(err)
		}
		dev := f.MustLink(t, "flannel.1").Index
		got, err := v.Peer(ownLease(), peerLease("10.244.2.0/24", "", "192.168.1.2", "", peerData, ""))
		want := reconcile.Objects{Routes: []kernel.Route{{Dst: pfx("10.244.2.0/24"), Gw: ip("192.168.1.2"), LinkIndex: d.External.Index}}}
		if err != nil || !sameObjects(got, want) {
			t.Errorf("near peer: %+v, %v; want %+v", got, err, want)
		}
		got, err = v.Peer(ownLease(), peerLease("10.244.3.0/24", "", "192.168.200.3", "", peerData, ""))
		if err != nil || len(got.Routes) != 1 || got.Routes[0].LinkIndex != dev || !got.Routes[0].OnLink || len(got.FDB) != 1 {
			t.Errorf("far peer: %+v, %v; want the vxlan objects", got, err)
		}
	})

	t.Run("refused", func(t *testing.T) {
		f := kerneltest.New()
		v := newVXLAN(t, deps(t, f, conf(v4only, "")))
		if err := v.Ensure(t.Context(), ownLease()); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name string
			l    lease.Lease
			want string
			is   error
		}{
			{"bad BackendData", peerLease("10.244.2.0/24", "", "192.168.1.2", "", `{"VNI":"one"}`, ""), "its vxlan BackendData is not valid", nil},
			{"no BackendData", peerLease("10.244.2.0/24", "", "192.168.1.2", "", "", ""), "its vxlan BackendData is not valid", nil},
			{"bad VtepMAC", peerLease("10.244.2.0/24", "", "192.168.1.2", "", `{"VNI":1,"VtepMAC":"zz:56"}`, ""), `its VtepMAC: "zz:56" is not a 48-bit MAC address`, nil},
			{"no public address", peerLease("10.244.2.0/24", "", "", "", peerData, ""), "it has no public address for 10.244.2.0/24", nil},
			{"other type", func() lease.Lease {
				l := peerLease("10.244.2.0/24", "", "192.168.1.2", "", peerData, "")
				l.Attrs.BackendType = "host-gw"
				return l
			}(), `its BackendType "host-gw" is not this node's "vxlan"`, backend.ErrOtherType},
			{"own lease", ownLease(), "it is this node's own lease", backend.ErrSelf},
			{"own public address", peerLease("10.244.2.0/24", "", "192.168.1.1", "", peerData, ""), "own public address", backend.ErrSelf},
		} {
			got, err := v.Peer(ownLease(), tc.l)
			if err == nil || !strings.Contains(err.Error(), tc.want) || got.Len() != 0 {
				t.Errorf("%s: %+v, %v; want no objects and an error containing %q", tc.name, got, err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("%s: %v does not wrap %v", tc.name, err, tc.is)
			}
		}
	})
}

// sameObjects compares Objects in order.
func sameObjects(a, b reconcile.Objects) bool {
	return slices.Equal(a.Routes, b.Routes) && slices.Equal(a.Neighs, b.Neighs) && slices.Equal(a.FDB, b.FDB)
}

// Observe (weft status) reports missing devices and creates nothing; with
// the devices there it finds their indices and MACs.
func TestObserve(t *testing.T) {
	f := kerneltest.New()
	d := deps(t, f, conf(dual, ""))
	v := newVXLAN(t, d)
	missing, err := v.Observe(ownLease())
	if err != nil || !slices.Equal(missing, []string{"flannel.1", "flannel-v6.1"}) {
		t.Errorf("Observe on an empty kernel = %v, %v; want both devices", missing, err)
	}
	if calls := f.Calls(); len(calls) != 0 {
		t.Errorf("Observe wrote %v", calls)
	}
	if len(v.Links()) != 0 {
		t.Errorf("Links %v with no device", v.Links())
	}

	mac := kernel.MAC{0x0a, 0, 0, 0, 0, 1}
	if err := f.AddLink(kernel.LinkSpec{Name: "flannel.1", Kind: kernel.KindVXLAN, MAC: mac,
		VXLAN: &kernel.VXLAN{VNI: 1, Dev: d.External.Index, Local: public, Port: 8472}}); err != nil {
		t.Fatal(err)
	}
	dev := f.MustLink(t, "flannel.1").Index
	f.Calls()
	v = newVXLAN(t, d)
	missing, err = v.Observe(ownLease())
	if err != nil || !slices.Equal(missing, []string{"flannel-v6.1"}) {
		t.Errorf("Observe = %v, %v; want [flannel-v6.1]", missing, err)
	}
	if calls := f.Calls(); len(calls) != 0 {
		t.Errorf("Observe wrote %v", calls)
	}
	if !slices.Equal(v.Links(), []int{dev}) || v.Devices()[0].MAC != mac || len(v.Devices()[0].Addrs) != 1 {
		t.Errorf("after Observe: Links %v, Devices %+v; want [%d] with MAC %s", v.Links(), v.Devices(), dev, mac)
	}
	got, err := v.Peer(ownLease(), peerLease("10.244.2.0/24", "", "192.168.1.2", "", peerData, ""))
	if err != nil || len(got.Routes) != 1 || got.Routes[0].LinkIndex != dev {
		t.Errorf("Peer after Observe: %+v, %v; want a route on #%d", got, err, dev)
	}
}

// The lease data; a family without a public address is refused.
func TestAttrsAndRefusals(t *testing.T) {
	f := kerneltest.New()
	v := newVXLAN(t, deps(t, f, conf(dual, "")))
	a, err := v.Attrs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var d4, d6 Data
	if json.Unmarshal(a.BackendData, &d4) != nil || json.Unmarshal(a.BackendV6Data, &d6) != nil || d4.VNI != 1 || d6.VNI != 1 ||
		d4.VtepMAC == d6.VtepMAC || a.PublicIP != public || a.PublicIPv6 != public6 || a.BackendType != Name {
		t.Errorf("attrs %+v (%s, %s)", a, a.BackendData, a.BackendV6Data)
	}
	if calls := f.Calls(); len(calls) != 0 {
		t.Errorf("Attrs wrote %v", calls)
	}

	d := deps(t, kerneltest.New(), conf(dual, ""))
	d.External.PublicIPv6 = netip.Addr{}
	if _, err := New(d); err == nil || !strings.Contains(err.Error(), "vxlan over IPv6 needs a public IPv6 address on eth0") {
		t.Errorf("dual stack without a public IPv6 address: %v", err)
	}
	v6only := `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`
	v = newVXLAN(t, deps(t, kerneltest.New(), v6only))
	if a, _ := v.Attrs(t.Context()); a.PublicIP.IsValid() || a.BackendData != nil || a.BackendV6Data == nil {
		t.Errorf("IPv6-only attrs %+v", a)
	}
}
