//go:build linux

package hostgw

import (
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
)

var (
	public  = netip.MustParseAddr("192.168.1.1")
	public6 = netip.MustParseAddr("fd00::1")
)

// newHostGW builds the backend over f, whose external interface eth0
// (192.168.1.1/24, fd00::1/64, MTU 9001) it adds.
func newHostGW(t *testing.T, f *kerneltest.Fake) (*HostGW, backend.External) {
	t.Helper()
	nc, _, err := config.ParseNetConf([]byte(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"host-gw"}}`))
	if err != nil {
		t.Fatal(err)
	}
	addrs := []netip.Prefix{netip.MustParsePrefix("192.168.1.1/24"), netip.MustParsePrefix("fd00::1/64")}
	ext := backend.External{Name: "eth0", Index: f.AddExternal("eth0", 9001, true, addrs...), MTU: 9001, Addrs: addrs,
		PublicIP: public, PublicIPv6: public6}
	f.Calls()
	b, err := New(backend.Deps{Net: nc, External: ext, Kernel: f, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return b.(*HostGW), ext
}

func peer(subnet, subnet6, ip, ip6 string) lease.Lease {
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
	return l
}

var own = lease.Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24"), IPv6Subnet: netip.MustParsePrefix("fd00:10:244:1::/64"),
	Attrs: lease.Attrs{PublicIP: public, PublicIPv6: public6, BackendType: Name}}

// A peer is a route per family: <subnet> via <public address> dev
// <external>, nothing else.
func TestPeerRoutes(t *testing.T) {
	f := kerneltest.New()
	h, ext := newHostGW(t, f)
	route := func(dst, via string) kernel.Route {
		return kernel.Route{Dst: netip.MustParsePrefix(dst), Gw: netip.MustParseAddr(via), LinkIndex: ext.Index}
	}
	for _, tc := range []struct {
		name string
		l    lease.Lease
		want []kernel.Route
	}{
		{"ipv4", peer("10.244.2.0/24", "", "192.168.1.2", ""), []kernel.Route{route("10.244.2.0/24", "192.168.1.2")}},
		{"ipv6", peer("", "fd00:10:244:2::/64", "", "fd00::2"), []kernel.Route{route("fd00:10:244:2::/64", "fd00::2")}},
		{"dual stack", peer("10.244.2.0/24", "fd00:10:244:2::/64", "192.168.1.2", "fd00::2"),
			[]kernel.Route{route("10.244.2.0/24", "192.168.1.2"), route("fd00:10:244:2::/64", "fd00::2")}},
	} {
		got, err := h.Peer(own, tc.l)
		if err != nil || !slices.Equal(got.Routes, tc.want) || len(got.Neighs)+len(got.FDB) != 0 {
			t.Errorf("%s: Peer = %+v, %v; want routes %v", tc.name, got, err, tc.want)
		}
	}
	if calls := f.Calls(); len(calls) != 0 {
		t.Errorf("Peer wrote %v", calls)
	}
}

// A lease host-gw cannot use is refused with the reason and no route: a
// peer not on a directly connected subnet (in either family), a subnet
// without a public address of its family, another type, the node itself.
func TestPeerRefused(t *testing.T) {
	h, _ := newHostGW(t, kerneltest.New())
	other := peer("10.244.2.0/24", "", "192.168.1.2", "")
	other.Attrs.BackendType = "vxlan"
	for _, tc := range []struct {
		name string
		l    lease.Lease
		want string
		is   error
	}{
		{"far ipv4", peer("10.244.2.0/24", "", "192.168.200.2", ""),
			"host-gw needs peers on a directly connected subnet, but 192.168.200.2 is not on any subnet of eth0", nil},
		{"far ipv6", peer("10.244.2.0/24", "fd00:10:244:2::/64", "192.168.1.2", "fd01::2"),
			"but fd01::2 is not on any subnet of eth0", nil},
		{"no public address", peer("10.244.2.0/24", "", "", ""), "it has no public address for 10.244.2.0/24", nil},
		{"no public IPv6 address", peer("10.244.2.0/24", "fd00:10:244:2::/64", "192.168.1.2", ""), "it has no public address for fd00:10:244:2::/64", nil},
		{"other type", other, `its BackendType "vxlan" is not this node's "host-gw"`, backend.ErrOtherType},
		{"own lease", own, "it is this node's own lease", backend.ErrSelf},
		{"own public address", peer("10.244.2.0/24", "", "192.168.1.1", ""), "it carries this node's own public address", backend.ErrSelf},
	} {
		got, err := h.Peer(own, tc.l)
		if err == nil || !strings.Contains(err.Error(), tc.want) || got.Len() != 0 {
			t.Errorf("%s: Peer = %+v, %v; want no route and an error containing %q", tc.name, got, err, tc.want)
		}
		if tc.is != nil && !errors.Is(err, tc.is) {
			t.Errorf("%s: %v does not wrap %v", tc.name, err, tc.is)
		}
	}
}

// host-gw owns no device: Ensure and Observe touch nothing, Devices and
// Links are empty, the pods' MTU is the external interface's, and the
// lease carries the type and no data.
func TestNoDevice(t *testing.T) {
	f := kerneltest.New()
	h, _ := newHostGW(t, f)
	if err := h.Ensure(t.Context(), own); err != nil {
		t.Fatal(err)
	}
	if missing, err := h.Observe(own); err != nil || len(missing) != 0 {
		t.Errorf("Observe = %v, %v", missing, err)
	}
	if calls := f.Calls(); len(calls) != 0 {
		t.Errorf("Ensure/Observe wrote %v", calls)
	}
	if h.Devices() != nil || h.Links() != nil {
		t.Errorf("Devices %v Links %v, want nil", h.Devices(), h.Links())
	}
	if h.MTU() != 9001 {
		t.Errorf("MTU %d, want the external 9001", h.MTU())
	}
	a, err := h.Attrs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := a.MarshalJSON(); string(v) != `{"PublicIP":"192.168.1.1","PublicIPv6":"fd00::1","BackendType":"host-gw"}` {
		t.Errorf("lease value %s", v)
	}
}
