//go:build linux

package wireguard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/kernel"
	"github.com/weft-net/weft/internal/kernel/kerneltest"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/reconcile"
)

// fakePath is a data path over kerneltest.Fake and fakeControl.
type fakePath struct {
	*fakeControl
	k *kerneltest.Fake
}

func (p fakePath) ensure(name string, mtu int) error {
	if _, err := p.k.LinkByName(name); err != nil {
		if err := p.k.AddLink(kernel.LinkSpec{Name: name, Kind: kernel.KindWireGuard, MTU: mtu}); err != nil {
			return err
		}
	}
	if _, ok := p.devs[name]; !ok {
		p.devs[name] = newFakeControl(name).devs[name]
	}
	return nil
}
func (fakePath) String() string { return "fake" }
func (fakePath) Close() error   { return nil }

func netConf(t *testing.T, js string) *config.NetConf {
	t.Helper()
	c, _, err := config.ParseNetConf([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ConfigureBackend(backend.Registry{Type()}); err != nil {
		t.Fatal(err)
	}
	return c
}

// deps builds the backend's dependencies over k, whose external interface
// eth0 (192.168.1.1/24, fd00::1/64, MTU 1500) it adds; the key file is in a
// temporary directory; path is --wireguard-path ("": the default).
func deps(t *testing.T, k *kerneltest.Fake, js string, path backend.Path) backend.Deps {
	key := filepath.Join(t.TempDir(), "wgkey")
	addrs := []netip.Prefix{netip.MustParsePrefix("192.168.1.1/24"), netip.MustParsePrefix("fd00::1/64")}
	ext := k.AddExternal("eth0", 1500, true, addrs...)
	k.Calls()
	return backend.Deps{Net: netConf(t, js), Kernel: k, Logger: slog.New(slog.DiscardHandler),
		External: backend.External{Name: "eth0", Index: ext, MTU: 1500, Addrs: addrs,
			PublicIP: netip.MustParseAddr("192.168.1.1"), PublicIPv6: netip.MustParseAddr("fd00::1")},
		Options: &config.Options{WireGuardKeyFile: key}, Settings: &Settings{Path: path, SocketDir: DefaultSocketDir}}
}

// index returns the index of the link name in k.
func index(t *testing.T, k *kerneltest.Fake, name string) int {
	t.Helper()
	l, err := k.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l.Index
}

func peerLease(t *testing.T, subnet, subnet6, ip, ip6 string, data, data6 any) lease.Lease {
	t.Helper()
	l := lease.Lease{Attrs: lease.Attrs{BackendType: Name}}
	if subnet != "" {
		l.Subnet = netip.MustParsePrefix(subnet)
		l.Attrs.PublicIP = netip.MustParseAddr(ip)
	}
	if subnet6 != "" {
		l.IPv6Subnet = netip.MustParsePrefix(subnet6)
		l.Attrs.PublicIPv6 = netip.MustParseAddr(ip6)
	}
	enc := func(v any) json.RawMessage {
		switch v := v.(type) {
		case nil:
			return nil
		case string:
			return json.RawMessage(v)
		}
		b, _ := json.Marshal(v)
		return b
	}
	l.Attrs.BackendData, l.Attrs.BackendV6Data = enc(data), enc(data6)
	return l
}

const dual = `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"wireguard"%s}}`

// Each Mode's devices, lease data, peers and routes, as flannel's. Ensure
// makes the devices; their MTU and addresses are Devices', which the
// reconciler applies.
func TestModes(t *testing.T) {
	own := lease.Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24"), IPv6Subnet: netip.MustParsePrefix("fd00:10:244:1::/64")}
	peerKey := genKey(t).PublicKey().String()
	peer := peerLease(t, "10.244.2.0/24", "fd00:10:244:2::/64", "192.168.1.2", "fd00::2",
		leaseData{PublicKey: peerKey, Port: 51820}, leaseData{PublicKey: peerKey, Port: 51821})
	const a4, a6 = "10.244.1.0/32", "fd00:10:244:1::/128"
	tests := []struct {
		name, opts string
		devs       map[string][]string // device -> endpoint, allowed...
		addrs      map[string][]string // device -> addresses
		routes     []string
		v6Port     int
	}{
		{"separate", "", map[string][]string{
			DeviceName:   {"192.168.1.2:51820", "10.244.2.0/24"},
			DeviceNameV6: {"[fd00::2]:51821", "fd00:10:244:2::/64"}},
			map[string][]string{DeviceName: {a4}, DeviceNameV6: {a6}},
			[]string{"10.244.0.0/16 dev " + DeviceName, "fd00:10:244::/56 dev " + DeviceNameV6}, 51821},
		{"auto", `,"Mode":"auto"`, map[string][]string{DeviceName: {"192.168.1.2:51820", "10.244.2.0/24", "fd00:10:244:2::/64"}},
			map[string][]string{DeviceName: {a4, a6}},
			[]string{"10.244.0.0/16 dev " + DeviceName, "fd00:10:244::/56 dev " + DeviceName}, 51820},
		{"ipv6", `,"Mode":"ipv6"`, map[string][]string{DeviceName: {"[fd00::2]:51820", "10.244.2.0/24", "fd00:10:244:2::/64"}},
			map[string][]string{DeviceName: {a4, a6}},
			[]string{"10.244.0.0/16 dev " + DeviceName, "fd00:10:244::/56 dev " + DeviceName}, 51820},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := kerneltest.New()
			p := fakePath{newFakeControl(), k}
			b, err := newWith(deps(t, k, strings.ReplaceAll(dual, "%s", tc.opts), ""), p)
			if err != nil {
				t.Fatal(err)
			}
			a, _ := b.Attrs(t.Context())
			var d4, d6 leaseData
			if json.Unmarshal(a.BackendData, &d4) != nil || json.Unmarshal(a.BackendV6Data, &d6) != nil ||
				d4.PublicKey != b.priv.public().String() || d6.PublicKey != d4.PublicKey || d4.Port != 51820 || d6.Port != tc.v6Port {
				t.Errorf("lease data %s / %s", a.BackendData, a.BackendV6Data)
			}
			if len(b.NodeRoutes()) != 0 || len(b.Links()) != 0 {
				t.Errorf("before Ensure: routes %v, links %v; want none", b.NodeRoutes(), b.Links())
			}
			if err := b.Ensure(t.Context(), own); err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			var wantCalls []string
			for _, name := range []string{DeviceName, DeviceNameV6} {
				if _, ok := tc.devs[name]; ok {
					wantCalls = append(wantCalls, "add wireguard "+name)
				}
			}
			if got := k.Calls(); !slices.Equal(got, wantCalls) {
				t.Errorf("Ensure wrote %v, want only %v (addresses and MTU are the reconciler's)", got, wantCalls)
			}
			if _, err := b.Peer(own, peer); err != nil {
				t.Fatal(err)
			}
			if _, err := b.ps.sync(); err != nil {
				t.Fatal(err)
			}
			for devName, want := range tc.devs {
				d, err := p.Device(devName)
				if err != nil || len(d.Peers) != 1 {
					t.Fatalf("%s: %v %+v", devName, err, d)
				}
				got := []string{d.Peers[0].Endpoint.String()}
				for _, n := range d.Peers[0].AllowedIPs {
					got = append(got, n.String())
				}
				if strings.Join(got, " ") != strings.Join(want, " ") {
					t.Errorf("%s peer %v, want %v", devName, got, want)
				}
			}
			names := map[int]string{}
			var wantLinks []int
			for _, name := range []string{DeviceName, DeviceNameV6} {
				if _, ok := tc.devs[name]; ok {
					names[index(t, k, name)] = name
					wantLinks = append(wantLinks, index(t, k, name))
				}
			}
			if !slices.Equal(b.Links(), wantLinks) {
				t.Errorf("Links %v, want %v", b.Links(), wantLinks)
			}
			var routes []string
			for _, r := range b.NodeRoutes() {
				if r.Gw.IsValid() || r.OnLink || r.Blackhole {
					t.Errorf("route %s, want a plain device route", r)
				}
				routes = append(routes, fmt.Sprintf("%s dev %s", r.Dst, names[r.LinkIndex]))
			}
			if strings.Join(routes, ",") != strings.Join(tc.routes, ",") {
				t.Errorf("routes %v, want %v", routes, tc.routes)
			}
			devs := b.Devices()
			if len(devs) != len(tc.devs) {
				t.Fatalf("devices %+v, want %d", devs, len(tc.devs))
			}
			for _, d := range devs {
				want := kernel.Device{Name: d.Name, MTU: 1420}
				for _, a := range tc.addrs[d.Name] {
					want.Addrs = append(want.Addrs, netip.MustParsePrefix(a))
				}
				if len(want.Addrs) == 0 || !d.Equal(want) {
					t.Errorf("device %+v, want %+v", d, want)
				}
				if have, _ := k.Addrs(index(t, k, d.Name)); len(have) != 0 {
					t.Errorf("Ensure gave %s addresses %v", d.Name, have)
				}
			}
			if b.MTU() != 1420 {
				t.Errorf("MTU %d, want 1420", b.MTU())
			}

			// The reconciler configures the devices as Devices says.
			rec := reconcile.New(k, slog.New(slog.DiscardHandler))
			rec.SetDevices(devs)
			if st, err := rec.Apply(t.Context()); err != nil || len(st.Missing) != 0 {
				t.Fatalf("Apply: %+v %v", st, err)
			}
			for _, d := range devs {
				l, _ := k.LinkByName(d.Name)
				if have, _ := k.Addrs(l.Index); !slices.Equal(have, d.Addrs) || l.MTU != 1420 || !l.Up {
					t.Errorf("%s after the reconciler: addresses %v, mtu %d, up %v; want %v, 1420, up", d.Name, have, l.MTU, l.Up, d.Addrs)
				}
			}
		})
	}
}

// Devices has no addresses before the first Ensure (or Observe); Observe
// finds the devices as they are, creating nothing, and names the missing.
func TestObserve(t *testing.T) {
	k := kerneltest.New()
	b, err := newWith(deps(t, k, strings.ReplaceAll(dual, "%s", ""), ""), fakePath{newFakeControl(), k})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range b.Devices() {
		if len(d.Addrs) != 0 || d.MTU != 1420 {
			t.Errorf("before Ensure: %+v, want MTU 1420 and no address", d)
		}
	}
	if err := k.AddLink(kernel.LinkSpec{Name: DeviceName, Kind: kernel.KindWireGuard}); err != nil {
		t.Fatal(err)
	}
	k.Calls()
	own := lease.Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24"), IPv6Subnet: netip.MustParsePrefix("fd00:10:244:1::/64")}
	missing, err := b.Observe(own)
	if err != nil || !slices.Equal(missing, []string{DeviceNameV6}) {
		t.Errorf("Observe = %v, %v; want [%s]", missing, err, DeviceNameV6)
	}
	if got := k.Calls(); len(got) != 0 {
		t.Errorf("Observe wrote %v", got)
	}
	if want := []int{index(t, k, DeviceName)}; !slices.Equal(b.Links(), want) {
		t.Errorf("Links %v, want %v", b.Links(), want)
	}
	if d := b.Devices(); len(d) != 2 || len(d[0].Addrs) != 1 || d[0].Addrs[0] != netip.MustParsePrefix("10.244.1.0/32") {
		t.Errorf("Devices after Observe %+v", d)
	}
}

// A flannel lease carries no Port (its peers use their own ListenPort); a
// lease another node wrote wrong is refused with the reason.
func TestPeerLeases(t *testing.T) {
	k := kerneltest.New()
	b, err := newWith(deps(t, k, `{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","ListenPort":7000,"MTU":1400}}`, ""), fakePath{newFakeControl(), k})
	if err != nil {
		t.Fatal(err)
	}
	if b.MTU() != 1320 {
		t.Errorf("MTU %d with Backend.MTU 1400, want 1320", b.MTU())
	}
	own := lease.Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24"), Attrs: lease.Attrs{PublicIP: netip.MustParseAddr("192.168.1.1")}}
	key := genKey(t).PublicKey().String()
	flannel := peerLease(t, "10.244.2.0/24", "", "192.168.1.2", "", `{"PublicKey":"`+key+`"}`, nil)
	specs, err := b.peerSpecs(own, flannel)
	if err != nil || specs[DeviceName].endpoint.String() != "192.168.1.2:7000" {
		t.Errorf("flannel lease: %v %+v", err, specs)
	}
	for name, l := range map[string]struct {
		l    lease.Lease
		want string
	}{
		"no data":    {peerLease(t, "10.244.2.0/24", "", "192.168.1.2", "", nil, nil), "it has no BackendData"},
		"not json":   {peerLease(t, "10.244.2.0/24", "", "192.168.1.2", "", `"key"`, nil), "its BackendData is not a wireguard lease's"},
		"bad key":    {peerLease(t, "10.244.2.0/24", "", "192.168.1.2", "", `{"PublicKey":"abc"}`, nil), "BackendData.PublicKey is not a base64-encoded 32-byte key"},
		"zero key":   {peerLease(t, "10.244.2.0/24", "", "192.168.1.2", "", `{"PublicKey":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`, nil), "not a base64-encoded 32-byte key"},
		"bad port":   {peerLease(t, "10.244.2.0/24", "", "192.168.1.2", "", `{"PublicKey":"`+key+`","Port":70000}`, nil), "Port 70000 is not a UDP port"},
		"overlap":    {peerLease(t, "10.244.1.0/25", "", "192.168.1.2", "", `{"PublicKey":"`+key+`"}`, nil), "overlaps this node's"},
		"other type": {func() lease.Lease { l := flannel; l.Attrs.BackendType = "vxlan"; return l }(), "is not this node's"},
		"no public":  {func() lease.Lease { l := flannel; l.Attrs.PublicIP = netip.Addr{}; return l }(), "no public IPv4 address"},
	} {
		if _, err := b.peerSpecs(own, l.l); err == nil || !strings.Contains(err.Error(), l.want) {
			t.Errorf("%s: err %v, want %q", name, err, l.want)
		}
	}
	if got := k.Calls(); len(got) != 0 {
		t.Errorf("building and Peer wrote %v", got)
	}
}

// The data path is chosen as ipip's: a kernel device where the kernel makes
// one, userspace where it cannot, what --wireguard-path forces.
func TestChoosePath(t *testing.T) {
	const js = `{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard"}}`
	addWG := func(k *kerneltest.Fake) error {
		return k.AddLink(kernel.LinkSpec{Name: DeviceName, Kind: kernel.KindWireGuard})
	}
	addTUN := func(k *kerneltest.Fake) error { return k.AddTUN(DeviceName) }
	for _, tc := range []struct {
		name   string
		path   backend.Path
		addErr error
		exists func(*kerneltest.Fake) error
		want   string
		calls  []string // the writes of building the backend
	}{
		{"kernel made one", "", nil, nil, "kernel", []string{"add wireguard " + DeviceName}},
		{"no module", "", unix.EOPNOTSUPP, nil, "userspace", nil},
		{"existing kernel device", "", unix.EOPNOTSUPP, addWG, "kernel", nil},
		{"existing tun", "", nil, addTUN, "userspace", nil},
		{"forced", PathUserspace, nil, nil, "userspace", nil},
		{"forced kernel", PathKernel, unix.EOPNOTSUPP, addTUN, "kernel", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := kerneltest.New()
			d := deps(t, k, js, tc.path)
			if tc.exists != nil {
				if err := tc.exists(k); err != nil {
					t.Fatal(err)
				}
				k.Calls()
			}
			k.FailOn("add wireguard", tc.addErr)
			b, err := newWith(d, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if b.path.String() != tc.want {
				t.Errorf("path %s, want %s", b.path, tc.want)
			}
			if got := k.Calls(); !slices.Equal(got, tc.calls) {
				t.Errorf("building wrote %v, want %v", got, tc.calls)
			}
		})
	}
	k := kerneltest.New()
	d := deps(t, k, js, "")
	k.FailOn("add wireguard", unix.EPERM)
	if _, err := newWith(d, nil); !errors.Is(err, unix.EPERM) {
		t.Errorf("a failure other than a missing module: %v", err)
	}
	if _, err := newWith(deps(t, kerneltest.New(), js, "ebpf"), nil); err == nil ||
		!strings.Contains(err.Error(), `--wireguard-path "ebpf"`) {
		t.Errorf("bad --wireguard-path: %v", err)
	}
}

// Another node's BackendData, whatever it holds, is a peer or a reason.
func FuzzPeerLease(f *testing.F) {
	f.Add([]byte(`{"PublicKey":"mFbFz5EHuvQOEDqTx4G40Vc4JadFEIgOnUCO0Ckr0Wo=","Port":51820}`), []byte(nil))
	f.Add([]byte(`{"PublicKey":1}`), []byte(`{"PublicKey":"mFbFz5EHuvQOEDqTx4G40Vc4JadFEIgOnUCO0Ckr0Wo=","Port":-1}`))
	f.Fuzz(func(t *testing.T, data, data6 []byte) {
		own := lease.Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24"), IPv6Subnet: netip.MustParsePrefix("fd00:10:244:1::/64")}
		for _, opts := range []string{"", `,"Mode":"auto"`} {
			k := kerneltest.New()
			b, err := newWith(deps(t, k, strings.ReplaceAll(dual, "%s", opts), ""), fakePath{newFakeControl(), k})
			if err != nil {
				t.Fatal(err)
			}
			l := peerLease(t, "10.244.2.0/24", "fd00:10:244:2::/64", "192.168.1.2", "fd00::2", nil, nil)
			l.Attrs.BackendData, l.Attrs.BackendV6Data = data, data6
			specs, err := b.peerSpecs(own, l)
			if err != nil {
				continue
			}
			for _, s := range specs {
				if s.key == ([32]byte{}) || !s.endpoint.IsValid() || len(s.allowed) == 0 {
					t.Fatalf("accepted an unusable peer %+v", s)
				}
			}
		}
	})
}

// The kernel path creates flannel-wg as a kernel wireguard link with the
// MTU, keeps one that exists, and refuses a device of another kind with
// how to fix it; its peers go through the same peerSync as userspace's.
func TestKernelPathDevice(t *testing.T) {
	k := kerneltest.New()
	kp := &kernelPath{k: k, ctl: newFakeControl(DeviceName)}
	if err := kp.ensure(DeviceName, 1420); err != nil {
		t.Fatal(err)
	}
	l, err := k.LinkByName(DeviceName)
	if calls := k.Calls(); err != nil || !slices.Equal(calls, []string{"add wireguard " + DeviceName}) ||
		l.Kind != kernel.KindWireGuard || l.MTU != 1420 {
		t.Fatalf("calls %v, link %+v, %v; want one wireguard link %s mtu 1420", calls, l, err, DeviceName)
	}
	if err := kp.ensure(DeviceName, 1420); err != nil {
		t.Errorf("an existing device: %v", err)
	}
	if calls := k.Calls(); len(calls) != 0 {
		t.Errorf("ensure over an existing device wrote %v", calls)
	}
	if err := k.AddTUN(DeviceNameV6); err != nil {
		t.Fatal(err)
	}
	k.Calls()
	if err := kp.ensure(DeviceNameV6, 1420); err == nil || !strings.Contains(err.Error(), "exists as a tun device") ||
		!strings.Contains(err.Error(), "--wireguard-path=userspace") {
		t.Errorf("a TUN where a kernel device should be: %v", err)
	}
	if calls := k.Calls(); len(calls) != 0 {
		t.Errorf("ensure over a TUN wrote %v; it must not delete the userspace path's device", calls)
	}
}

// SyncPeers (the daemon's full syncs) makes the peer loop check at once,
// long before its own interval: a peer removed by hand is back.
func TestSyncPeersChecksNow(t *testing.T) {
	k := kerneltest.New()
	ctl := newFakeControl(DeviceName)
	b, err := newWith(deps(t, k, `{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard"}}`, ""), fakePath{ctl, k})
	if err != nil {
		t.Fatal(err)
	}
	own := lease.Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24"), Attrs: lease.Attrs{PublicIP: netip.MustParseAddr("192.168.1.1")}}
	key := genKey(t).PublicKey().String()
	peer := peerLease(t, "10.244.2.0/24", "", "192.168.1.2", "", `{"PublicKey":"`+key+`"}`, nil)
	if _, err := b.Peer(own, peer); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.ps.run(ctx, time.Hour) }()
	defer func() { cancel(); <-done }()
	peers := func() int {
		d, err := ctl.Device(DeviceName)
		if err != nil {
			t.Fatal(err)
		}
		return len(d.Peers)
	}
	for round := range 2 { // the first check adds the peer; the second restores it
		b.SyncPeers()
		deadline := time.Now().Add(5 * time.Second)
		for peers() != 1 {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: no peer 5 s after SyncPeers (the loop's own interval is an hour)", round)
			}
			time.Sleep(5 * time.Millisecond)
		}
		ctl.mu.Lock()
		ctl.devs[DeviceName].Peers = nil // removed by hand
		ctl.mu.Unlock()
	}
}
