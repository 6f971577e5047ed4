//go:build linux

package ipip

import (
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/kernel"
	"github.com/weft-net/weft/internal/kernel/kerneltest"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/reconcile"
	"github.com/weft-net/weft/internal/store"
)

var public = netip.MustParseAddr("192.168.100.11")

// deps builds the backend's dependencies over f, whose external interface
// eth0 (192.168.100.11/24, MTU 1500) it adds, with --ipip-path=path ("":
// the default).
func deps(t *testing.T, f *kerneltest.Fake, netconf string, path backend.Path) backend.Deps {
	t.Helper()
	nc, _, err := config.ParseNetConf([]byte(netconf))
	if err != nil {
		t.Fatal(err)
	}
	addrs := []netip.Prefix{netip.MustParsePrefix("192.168.100.11/24")}
	ext := f.AddExternal("eth0", 1500, true, addrs...)
	f.Calls()
	return backend.Deps{Net: nc, Kernel: f, Logger: slog.New(slog.DiscardHandler),
		External: backend.External{Name: "eth0", Index: ext, MTU: 1500, PublicIP: public, Addrs: addrs},
		Settings: &Settings{Path: path}}
}

const netconf = `{"Network":"10.244.0.0/16","Backend":{"Type":"ipip"}}`

const forceKernel = backend.PathKernel

func mustLease(t *testing.T, key, value string) lease.Lease {
	t.Helper()
	l, err := store.Decode(nil, key, []byte(value), false)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// The kernel path makes flannel's device: kind ipip, local = the public
// address, no remote, MTU external - 20. Its address, MTU and up flag are
// desired state (Devices) that the reconciler applies, a stale address
// going; Ensure itself writes none of them.
func TestKernelEnsure(t *testing.T) {
	f := kerneltest.New()
	b, err := New(deps(t, f, netconf, ""))
	if err != nil {
		t.Fatal(err)
	}
	k, ok := b.(*Kernel)
	if !ok {
		t.Fatalf("auto with a kernel that makes ipip devices chose %T", b)
	}
	if got := f.Calls(); !slices.Equal(got, []string{"add ipip " + DeviceName}) {
		t.Errorf("New: calls %v, want the one ipip device", got)
	}
	l := f.MustLink(t, DeviceName)
	if l.Kind != kernel.KindIPIP || l.IPIP == nil || l.IPIP.Local != public || l.IPIP.Remote.IsValid() || l.MTU != 1480 {
		t.Fatalf("device %+v (ipip %+v); want kind ipip, local %s, no remote, mtu 1480", l, l.IPIP, public)
	}
	stale := netip.MustParsePrefix("10.244.9.0/32")
	if err := f.AddAddr(l.Index, stale); err != nil {
		t.Fatal(err)
	}
	f.Calls()

	own := mustLease(t, "10.244.7.0-24", `{"PublicIP":"192.168.100.11","BackendType":"ipip"}`)
	if err := k.Ensure(t.Context(), own); err != nil {
		t.Fatal(err)
	}
	if got := f.Calls(); len(got) != 0 {
		t.Errorf("Ensure over the right device wrote %v; addresses, MTU and up are the reconciler's", got)
	}
	if addrs, _ := f.Addrs(l.Index); !slices.Equal(addrs, []netip.Prefix{stale}) {
		t.Errorf("Ensure changed the addresses to %v", addrs)
	}
	addr := netip.MustParsePrefix("10.244.7.0/32")
	want := kernel.Device{Name: DeviceName, MTU: 1480, Addrs: []netip.Prefix{addr}}
	if ds := k.Devices(); len(ds) != 1 || !ds[0].Equal(want) {
		t.Errorf("Devices() = %+v, want [%+v]", ds, want)
	}
	if !slices.Equal(k.Links(), []int{l.Index}) || k.MTU() != 1480 {
		t.Errorf("Links %v MTU %d; want [%d] 1480", k.Links(), k.MTU(), l.Index)
	}

	// The reconciler configures it: the address (the stale one gone), the
	// MTU (someone changed it) and up.
	if err := f.SetLinkMTU(l.Index, 1400); err != nil {
		t.Fatal(err)
	}
	rec := reconcile.New(f, slog.New(slog.DiscardHandler))
	rec.SetDevices(k.Devices())
	st, err := rec.Apply(t.Context())
	if err != nil || len(st.Missing) != 0 {
		t.Fatalf("Apply: %+v, %v", st, err)
	}
	l = f.MustLink(t, DeviceName)
	if addrs, _ := f.Addrs(l.Index); !slices.Equal(addrs, []netip.Prefix{addr}) || l.MTU != 1480 || !l.Up {
		t.Errorf("after the reconciler: addresses %v, mtu %d, up %v; want only %s, 1480, up", addrs, l.MTU, l.Up, addr)
	}

	// Idempotent: a second Ensure keeps the device and changes nothing.
	f.Calls()
	if err := k.Ensure(t.Context(), own); err != nil {
		t.Fatal(err)
	}
	if got := f.Calls(); len(got) != 0 {
		t.Errorf("second Ensure changed the kernel: %v", got)
	}
	if again := f.MustLink(t, DeviceName); again.Index != l.Index {
		t.Errorf("second Ensure replaced the device (#%d -> #%d)", l.Index, again.Index)
	}

	// A lease without an IPv4 subnet is refused before anything is made.
	if err := k.Ensure(t.Context(), lease.Lease{IPv6Subnet: netip.MustParsePrefix("fd00::/64")}); err == nil ||
		!strings.Contains(err.Error(), "no IPv4 subnet") {
		t.Errorf("Ensure without an IPv4 subnet: %v", err)
	}
}

// A device of the name that is not this node's ipip device (another local
// address, a fixed remote, a TUN left by the userspace path when the kernel
// path is forced) is replaced.
func TestKernelReplacesForeignDevice(t *testing.T) {
	for name, add := range map[string]func(f *kerneltest.Fake) error{
		"other local": func(f *kerneltest.Fake) error {
			return f.AddLink(kernel.LinkSpec{Name: DeviceName, Kind: kernel.KindIPIP,
				IPIP: &kernel.IPIP{Local: netip.MustParseAddr("192.168.100.99")}})
		},
		"a remote": func(f *kerneltest.Fake) error {
			return f.AddLink(kernel.LinkSpec{Name: DeviceName, Kind: kernel.KindIPIP,
				IPIP: &kernel.IPIP{Local: public, Remote: netip.MustParseAddr("192.168.100.12")}})
		},
		"tun": func(f *kerneltest.Fake) error { return f.AddTUN(DeviceName) },
	} {
		t.Run(name, func(t *testing.T) {
			f := kerneltest.New()
			d := deps(t, f, netconf, forceKernel)
			if err := add(f); err != nil {
				t.Fatal(err)
			}
			old := f.MustLink(t, DeviceName)
			b, err := New(d)
			if err != nil {
				t.Fatal(err)
			}
			f.Calls()
			if err := b.Ensure(t.Context(), mustLease(t, "10.244.7.0-24", `{"PublicIP":"192.168.100.11"}`)); err != nil {
				t.Fatal(err)
			}
			if got, want := f.Calls(), []string{"del " + DeviceName, "add ipip " + DeviceName}; !slices.Equal(got, want) {
				t.Errorf("calls %v, want %v", got, want)
			}
			l := f.MustLink(t, DeviceName)
			if l.Index == old.Index || l.Kind != kernel.KindIPIP || l.IPIP.Local != public || l.IPIP.Remote.IsValid() {
				t.Errorf("device after Ensure %+v (ipip %+v), want a new ipip device local %s", l, l.IPIP, public)
			}
			if !slices.Equal(b.Links(), []int{l.Index}) {
				t.Errorf("Links %v, want [%d]", b.Links(), l.Index)
			}
		})
	}
}

// auto keeps what exists and otherwise asks the kernel; forced paths do as
// told; a kernel without ipip support means userspace, any other failure
// is an error.
func TestPathChoice(t *testing.T) {
	addTUN := func(f *kerneltest.Fake) error { return f.AddTUN(DeviceName) }
	addIPIP := func(f *kerneltest.Fake) error {
		return f.AddLink(kernel.LinkSpec{Name: DeviceName, Kind: kernel.KindIPIP, IPIP: &kernel.IPIP{Local: public}})
	}
	for _, tc := range []struct {
		name     string
		path     string
		existing func(*kerneltest.Fake) error
		addErr   error
		want     string // "kernel", "userspace" or an error's text
	}{
		{"auto, kernel makes the device", "", nil, nil, "kernel"},
		{"auto, no module", "", nil, unix.EOPNOTSUPP, "userspace"},
		{"auto, no address family", "", nil, unix.EAFNOSUPPORT, "userspace"},
		{"auto, other failure", "", nil, unix.EPERM, "operation not permitted"},
		{"auto keeps a kernel device", "auto", addIPIP, unix.EOPNOTSUPP, "kernel"},
		{"auto keeps the userspace TUN", "", addTUN, nil, "userspace"},
		{"forced kernel", "kernel", nil, unix.EOPNOTSUPP, "kernel"},
		{"forced userspace", "userspace", addIPIP, nil, "userspace"},
		{"bad value", "fast", nil, nil, `--ipip-path "fast": want auto, kernel or userspace`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := kerneltest.New()
			d := deps(t, f, netconf, backend.Path(tc.path))
			oldIndex := 0
			if tc.existing != nil {
				if err := tc.existing(f); err != nil {
					t.Fatal(err)
				}
				oldIndex = f.MustLink(t, DeviceName).Index
				f.Calls()
			}
			f.FailOn("add ipip", tc.addErr)
			b, err := New(d)
			got := ""
			switch b.(type) {
			case *Kernel:
				got = "kernel"
			case *Userspace:
				got = "userspace"
			}
			if err != nil {
				got = err.Error()
			}
			if !strings.Contains(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			calls := f.Calls()
			if tc.existing != nil {
				if l, err := f.LinkByName(DeviceName); err != nil || l.Index != oldIndex || len(calls) != 0 {
					t.Errorf("choosing the path changed the existing device: %v, calls %v", err, calls)
				}
			}
			if tc.path != "" && tc.path != "auto" && len(calls) != 0 {
				t.Errorf("a forced path wrote %v when built", calls)
			}
		})
	}
}

// weft status builds the backend read-only: with no device yet it takes
// the kernel path and makes nothing; Observe reports the device missing.
func TestReadOnly(t *testing.T) {
	f := kerneltest.New()
	d := deps(t, f, netconf, "")
	d.ReadOnly = true
	b, err := New(d)
	if err != nil {
		t.Fatal(err)
	}
	k, ok := b.(*Kernel)
	if !ok {
		t.Fatalf("read-only without a device chose %T", b)
	}
	own := mustLease(t, "10.244.7.0-24", `{"PublicIP":"192.168.100.11","BackendType":"ipip"}`)
	if missing, err := k.Observe(own); err != nil || !slices.Equal(missing, []string{DeviceName}) {
		t.Errorf("Observe without a device = %v, %v; want [%s]", missing, err, DeviceName)
	}
	if got := f.Calls(); len(got) != 0 {
		t.Errorf("read-only backend wrote %v", got)
	}
	if err := f.AddLink(kernel.LinkSpec{Name: DeviceName, Kind: kernel.KindIPIP, IPIP: &kernel.IPIP{Local: public}}); err != nil {
		t.Fatal(err)
	}
	l := f.MustLink(t, DeviceName)
	if missing, err := k.Observe(own); err != nil || len(missing) != 0 || !slices.Equal(k.Links(), []int{l.Index}) {
		t.Errorf("Observe with the device = %v, %v, Links %v; want none missing, [%d]", missing, err, k.Links(), l.Index)
	}
	if ds := k.Devices(); len(ds) != 1 || !slices.Equal(ds[0].Addrs, []netip.Prefix{netip.MustParsePrefix("10.244.7.0/32")}) {
		t.Errorf("Devices after Observe %+v", ds)
	}
}

// Routes: via the peer's public address on flannel.ipip, onlink; with
// DirectRouting, a directly connected peer gets a plain route on the
// external interface, and a far one still the ipip route. Leases that
// cannot be used say why.
func TestPeerRoutes(t *testing.T) {
	own := mustLease(t, "10.244.7.0-24", `{"PublicIP":"192.168.100.11","BackendType":"ipip"}`)
	near := mustLease(t, "10.244.8.0-24", `{"PublicIP":"192.168.100.12","BackendType":"ipip"}`)
	far := mustLease(t, "10.244.9.0-24", `{"PublicIP":"192.168.200.13","BackendType":"ipip"}`)
	for _, tc := range []struct {
		conf       string
		nearDirect bool
	}{
		{netconf, false},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"ipip","DirectRouting":true}}`, true},
	} {
		f := kerneltest.New()
		d := deps(t, f, tc.conf, forceKernel)
		b, err := New(d)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Peer(own, far); err == nil {
			t.Error("a peer before the device exists got a route through it")
		}
		if err := b.Ensure(t.Context(), own); err != nil {
			t.Fatal(err)
		}
		dev := f.MustLink(t, DeviceName).Index
		tunnelRoute := func(p lease.Lease) kernel.Route {
			return kernel.Route{Dst: p.Subnet, Gw: p.Attrs.PublicIP, LinkIndex: dev, OnLink: true}
		}
		wantNear := tunnelRoute(near)
		if tc.nearDirect {
			wantNear = kernel.Route{Dst: near.Subnet, Gw: near.Attrs.PublicIP, LinkIndex: d.External.Index}
		}
		for _, p := range []struct {
			l    lease.Lease
			want kernel.Route
		}{{near, wantNear}, {far, tunnelRoute(far)}} {
			st, err := b.Peer(own, p.l)
			if err != nil || len(st.Routes) != 1 || st.Routes[0] != p.want || len(st.Neighs)+len(st.FDB) != 0 {
				t.Errorf("%s: Peer(%s) = %+v, %v; want the one route %s", tc.conf, p.l.Key(), st, err, p.want)
			}
		}
		if got := f.Calls(); len(got) != 1 || got[0] != "add ipip "+DeviceName {
			t.Errorf("Peer wrote to the kernel: %v", got)
		}
	}
	f := kerneltest.New()
	b, err := New(deps(t, f, netconf, forceKernel))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Ensure(t.Context(), own); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct{ key, value, why string }{
		{"10.244.8.0-24", `{"PublicIP":"192.168.100.12","BackendType":"vxlan"}`, `BackendType "vxlan"`},
		{"10.244.8.0-24", `{"PublicIP":"192.168.100.11","BackendType":"ipip"}`, "own public address"},
		{"10.244.7.0-24", `{"PublicIP":"192.168.100.12","BackendType":"ipip"}`, "own lease"},
		{"10.244.7.0-25", `{"PublicIP":"192.168.100.12","BackendType":"ipip"}`, "overlaps"},
		{"10.244.8.0-24", `{"PublicIP":null,"PublicIPv6":"fd00::2","BackendType":"ipip"}`, "no public IPv4 address"},
	} {
		if _, err := b.Peer(own, mustLease(t, bad.key, bad.value)); err == nil || !strings.Contains(err.Error(), bad.why) {
			t.Errorf("Peer(%s %s) = %v, want an error about %q", bad.key, bad.value, err, bad.why)
		}
	}
}

// The lease carries the type and no data; IPv6 networks and a node without
// a public IPv4 address are refused with the reason.
func TestAttrsAndRefusals(t *testing.T) {
	b, err := New(deps(t, kerneltest.New(), netconf, forceKernel))
	if err != nil {
		t.Fatal(err)
	}
	a, err := b.Attrs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := a.MarshalJSON(); string(v) != `{"PublicIP":"192.168.100.11","PublicIPv6":null,"BackendType":"ipip"}` {
		t.Errorf("lease value %s", v)
	}
	d := deps(t, kerneltest.New(), `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48","Backend":{"Type":"ipip"}}`, "")
	if _, err := New(d); !errors.Is(err, config.ErrNetConf) || !strings.Contains(err.Error(), "IPv4 only") {
		t.Errorf("IPv6 network: %v", err)
	}
	f := kerneltest.New()
	d = deps(t, f, netconf, "")
	d.External.PublicIP = netip.Addr{}
	if _, err := New(d); err == nil || !strings.Contains(err.Error(), "public IPv4 address") {
		t.Errorf("no public IPv4: %v", err)
	}
	if got := f.Calls(); len(got) != 0 {
		t.Errorf("a refused backend wrote %v", got)
	}
}
