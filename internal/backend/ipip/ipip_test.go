//go:build linux

package ipip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/backend/backendtest"
	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/reconcile"
	"github.com/weft-net/weft/internal/store"
)

var public = netip.MustParseAddr("192.168.100.11")

func deps(t *testing.T, netconf string, env map[string]string) backend.Deps {
	t.Helper()
	nc, _, err := config.ParseNetConf([]byte(netconf))
	if err != nil {
		t.Fatal(err)
	}
	return backend.Deps{Net: nc, External: backend.External{Name: "eth0", Index: 2, MTU: 1500, PublicIP: public,
		Addrs: []netip.Prefix{netip.MustParsePrefix("192.168.100.11/24")}},
		LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}
}

const netconf = `{"Network":"10.244.0.0/16","Backend":{"Type":"ipip"}}`

func mustLease(t *testing.T, key, value string) lease.Lease {
	t.Helper()
	l, err := store.Decode(nil, key, []byte(value), false)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// The kernel path makes flannel's device: kind ipip, local = the public
// address, no remote, MTU external - 20, <own subnet>.0/32, up; a stale
// address goes.
func TestKernelEnsure(t *testing.T) {
	f := backendtest.NewLinks()
	b, err := newWith(deps(t, netconf, nil), f)
	if err != nil {
		t.Fatal(err)
	}
	k, ok := b.(*Kernel)
	if !ok {
		t.Fatalf("auto with a kernel that makes ipip devices chose %T", b)
	}
	own := mustLease(t, "10.244.7.0-24", `{"PublicIP":"192.168.100.11","BackendType":"ipip"}`)
	f.Addrs[DeviceName] = []netlink.Addr{{IPNet: &net.IPNet{IP: net.IPv4(10, 244, 9, 0), Mask: net.CIDRMask(32, 32)}}}
	if err := k.Ensure(t.Context(), own); err != nil {
		t.Fatal(err)
	}
	l, ok := f.ByName[DeviceName].(*netlink.Iptun)
	if !ok {
		t.Fatalf("device is %T, want *netlink.Iptun", f.ByName[DeviceName])
	}
	if !l.Local.Equal(net.IP(public.AsSlice())) || l.Remote != nil || l.MTU != 1480 || l.PMtuDisc != 1 {
		t.Errorf("device local %v remote %v mtu %d pmtudisc %d; want local %s, no remote, mtu 1480, pmtudisc 1", l.Local, l.Remote, l.MTU, l.PMtuDisc, public)
	}
	if got := fmt.Sprint(f.Addrs[DeviceName]); !strings.Contains(got, "10.244.7.0/32") || strings.Contains(got, "10.244.9.0") {
		t.Errorf("addresses %s, want only 10.244.7.0/32", got)
	}
	if l.Flags&net.FlagUp == 0 {
		t.Error("device is not up")
	}
	if k.Links()[0] != l.Index || k.MTU() != 1480 || k.Devices()[0] != DeviceName {
		t.Errorf("Links %v MTU %d Devices %v", k.Links(), k.MTU(), k.Devices())
	}
	// Idempotent: a second Ensure keeps the device and changes nothing.
	f.Calls = nil
	if err := k.Ensure(t.Context(), own); err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(f.Calls, func(c string) bool { return strings.HasPrefix(c, "add ") || strings.HasPrefix(c, "del") }) {
		t.Errorf("second Ensure changed the device: %v", f.Calls)
	}
}

// A device of the name that is not this node's ipip device (another local
// address, a TUN left by the userspace path when the kernel path is
// forced) is replaced.
func TestKernelReplacesForeignDevice(t *testing.T) {
	for _, old := range []netlink.Link{
		&netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: DeviceName, Index: 3}, Local: net.IPv4(192, 168, 100, 99)},
		&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: DeviceName, Index: 3}, Mode: netlink.TUNTAP_MODE_TUN},
	} {
		f := backendtest.NewLinks()
		f.ByName[DeviceName] = old
		b, err := newWith(deps(t, netconf, map[string]string{"WEFT_IPIP_PATH": "kernel"}), f)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Ensure(t.Context(), mustLease(t, "10.244.7.0-24", `{"PublicIP":"192.168.100.11"}`)); err != nil {
			t.Fatal(err)
		}
		if want := []string{"del " + old.Type(), "add ipip"}; !slices.Equal(f.Calls[:2], want) {
			t.Errorf("over a %s: calls %v, want %v first", old.Type(), f.Calls, want)
		}
	}
}

// auto keeps what exists and otherwise asks the kernel; forced paths do as
// told; a kernel without ipip support means userspace, any other failure
// is an error.
func TestPathChoice(t *testing.T) {
	tun := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: DeviceName, Index: 3}, Mode: netlink.TUNTAP_MODE_TUN}
	ipip := &netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: DeviceName, Index: 3}, Local: net.IP(public.AsSlice())}
	for _, tc := range []struct {
		name     string
		path     string
		existing netlink.Link
		addErr   error
		want     string // "kernel", "userspace" or an error's text
	}{
		{"auto, kernel makes the device", "", nil, nil, "kernel"},
		{"auto, no module", "", nil, unix.EOPNOTSUPP, "userspace"},
		{"auto, other failure", "", nil, unix.EPERM, "operation not permitted"},
		{"auto keeps a kernel device", "auto", ipip, unix.EOPNOTSUPP, "kernel"},
		{"auto keeps the userspace TUN", "", tun, nil, "userspace"},
		{"forced kernel", "kernel", nil, unix.EOPNOTSUPP, "kernel"},
		{"forced userspace", "userspace", ipip, nil, "userspace"},
		{"bad value", "fast", nil, nil, `WEFT_IPIP_PATH "fast": want auto, kernel or userspace`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := backendtest.NewLinks()
			f.AddErr = tc.addErr
			if tc.existing != nil {
				f.ByName[DeviceName] = tc.existing
			}
			env := map[string]string{}
			if tc.path != "" {
				env["WEFT_IPIP_PATH"] = tc.path
			}
			b, err := newWith(deps(t, netconf, env), f)
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
			if tc.existing != nil && f.ByName[DeviceName] != tc.existing && got == "userspace" {
				t.Error("choosing the path deleted the existing device")
			}
		})
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
		conf      string
		near, far reconcile.Route
	}{
		{netconf,
			reconcile.Route{Dst: near.Subnet, Gw: near.Attrs.PublicIP, LinkIndex: 11, OnLink: true},
			reconcile.Route{Dst: far.Subnet, Gw: far.Attrs.PublicIP, LinkIndex: 11, OnLink: true}},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"ipip","DirectRouting":true}}`,
			reconcile.Route{Dst: near.Subnet, Gw: near.Attrs.PublicIP, LinkIndex: 2},
			reconcile.Route{Dst: far.Subnet, Gw: far.Attrs.PublicIP, LinkIndex: 11, OnLink: true}},
	} {
		f := backendtest.NewLinks()
		b, err := newWith(deps(t, tc.conf, map[string]string{"WEFT_IPIP_PATH": "kernel"}), f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Peer(own, far); err == nil {
			t.Error("a peer before the device exists got a route through it")
		}
		if err := b.Ensure(t.Context(), own); err != nil {
			t.Fatal(err)
		}
		for _, p := range []struct {
			l    lease.Lease
			want reconcile.Route
		}{{near, tc.near}, {far, tc.far}} {
			st, err := b.Peer(own, p.l)
			if err != nil || len(st.Routes) != 1 || st.Routes[0] != p.want || len(st.Neighs)+len(st.FDB) != 0 {
				t.Errorf("%s: Peer(%s) = %+v, %v; want the one route %s", tc.conf, p.l.Key(), st, err, p.want)
			}
		}
	}
	b, _ := newWith(deps(t, netconf, map[string]string{"WEFT_IPIP_PATH": "kernel"}), backendtest.NewLinks())
	_ = b.Ensure(t.Context(), own)
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
	b, err := newWith(deps(t, netconf, map[string]string{"WEFT_IPIP_PATH": "kernel"}), backendtest.NewLinks())
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
	d := deps(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48","Backend":{"Type":"ipip"}}`, nil)
	if _, err := newWith(d, backendtest.NewLinks()); !errors.Is(err, config.ErrNetConf) || !strings.Contains(err.Error(), "IPv4 only") {
		t.Errorf("IPv6 network: %v", err)
	}
	d = deps(t, netconf, nil)
	d.External.PublicIP = netip.Addr{}
	if _, err := newWith(d, backendtest.NewLinks()); err == nil || !strings.Contains(err.Error(), "public IPv4 address") {
		t.Errorf("no public IPv4: %v", err)
	}
}
