//go:build linux

package wireguard

import (
	"encoding/json"
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/backend/backendtest"
	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/lease"
)

// fakePath is a data path over backendtest.Links and fakeControl.
type fakePath struct {
	*fakeControl
	k *backendtest.Links
}

func (p fakePath) ensure(name string, mtu int) error {
	if _, err := p.k.LinkByName(name); err != nil {
		if err := p.k.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}}); err != nil {
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

func deps(t *testing.T, js string, env map[string]string) backend.Deps {
	key := filepath.Join(t.TempDir(), "wgkey")
	return backend.Deps{Net: netConf(t, js), External: backend.External{Name: "eth0", Index: 2, MTU: 1500,
		PublicIP: netip.MustParseAddr("192.168.1.1"), PublicIPv6: netip.MustParseAddr("fd00::1")},
		LookupEnv: func(k string) (string, bool) {
			if k == "WIREGUARD_KEY_FILE" {
				return key, true
			}
			v, ok := env[k]
			return v, ok
		}}
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

// Each Mode's devices, lease data, peers and routes, as flannel's.
func TestModes(t *testing.T) {
	own := lease.Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24"), IPv6Subnet: netip.MustParsePrefix("fd00:10:244:1::/64")}
	peerKey := genKey(t).PublicKey().String()
	peer := peerLease(t, "10.244.2.0/24", "fd00:10:244:2::/64", "192.168.1.2", "fd00::2",
		leaseData{PublicKey: peerKey, Port: 51820}, leaseData{PublicKey: peerKey, Port: 51821})
	tests := []struct {
		name, opts string
		devs       map[string][]string // device -> endpoint, allowed...
		routes     []string
		v6Port     int
	}{
		{"separate", "", map[string][]string{
			DeviceName:   {"192.168.1.2:51820", "10.244.2.0/24"},
			DeviceNameV6: {"[fd00::2]:51821", "fd00:10:244:2::/64"}}, []string{"10.244.0.0/16 dev #11", "fd00:10:244::/56 dev #12"}, 51821},
		{"auto", `,"Mode":"auto"`, map[string][]string{DeviceName: {"192.168.1.2:51820", "10.244.2.0/24", "fd00:10:244:2::/64"}},
			[]string{"10.244.0.0/16 dev #11", "fd00:10:244::/56 dev #11"}, 51820},
		{"ipv6", `,"Mode":"ipv6"`, map[string][]string{DeviceName: {"[fd00::2]:51820", "10.244.2.0/24", "fd00:10:244:2::/64"}},
			[]string{"10.244.0.0/16 dev #11", "fd00:10:244::/56 dev #11"}, 51820},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := backendtest.NewLinks()
			p := fakePath{newFakeControl(), k}
			b, err := newWith(deps(t, strings.ReplaceAll(dual, "%s", tc.opts), nil), k, p)
			if err != nil {
				t.Fatal(err)
			}
			a, _ := b.Attrs(t.Context())
			var d4, d6 leaseData
			if json.Unmarshal(a.BackendData, &d4) != nil || json.Unmarshal(a.BackendV6Data, &d6) != nil ||
				d4.PublicKey != b.priv.public().String() || d6.PublicKey != d4.PublicKey || d4.Port != 51820 || d6.Port != tc.v6Port {
				t.Errorf("lease data %s / %s", a.BackendData, a.BackendV6Data)
			}
			if err := b.Ensure(t.Context(), own); err != nil {
				t.Fatal(err)
			}
			defer b.Close()
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
			if len(b.Devices()) != len(tc.devs) {
				t.Errorf("devices %v", b.Devices())
			}
			var routes []string
			for _, r := range b.NodeRoutes() {
				routes = append(routes, r.String())
			}
			if strings.Join(routes, ",") != strings.Join(tc.routes, ",") {
				t.Errorf("routes %v, want %v", routes, tc.routes)
			}
			if addrs := k.Addrs[DeviceName]; len(addrs) == 0 || addrs[0].IPNet.String() != "10.244.1.0/32" {
				t.Errorf("%s addresses %v", DeviceName, addrs)
			}
			if b.MTU() != 1420 {
				t.Errorf("MTU %d, want 1420", b.MTU())
			}
		})
	}
}

// A flannel lease carries no Port (its peers use their own ListenPort); a
// lease another node wrote wrong is refused with the reason.
func TestPeerLeases(t *testing.T) {
	k := backendtest.NewLinks()
	b, err := newWith(deps(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","ListenPort":7000,"MTU":1400}}`, nil), k, fakePath{newFakeControl(), k})
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
}

// The data path is chosen as ipip's: a kernel device where the kernel makes
// one, userspace where it cannot, what WEFT_WIREGUARD_PATH forces.
func TestChoosePath(t *testing.T) {
	const js = `{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard"}}`
	for _, tc := range []struct {
		name   string
		env    map[string]string
		addErr error
		exists netlink.Link
		want   string
	}{
		{"kernel made one", nil, nil, nil, "kernel"},
		{"no module", nil, unix.EOPNOTSUPP, nil, "userspace"},
		{"existing kernel device", nil, unix.EOPNOTSUPP, &netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: DeviceName}}, "kernel"},
		{"existing tun", nil, nil, &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: DeviceName}}, "userspace"},
		{"forced", map[string]string{"WEFT_WIREGUARD_PATH": "userspace"}, nil, nil, "userspace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := backendtest.NewLinks()
			k.AddErr = tc.addErr
			if tc.exists != nil {
				k.ByName[DeviceName] = tc.exists
			}
			b, err := newWith(deps(t, js, tc.env), k, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if b.path.String() != tc.want {
				t.Errorf("path %s, want %s", b.path, tc.want)
			}
		})
	}
	k := backendtest.NewLinks()
	k.AddErr = unix.EPERM
	if _, err := newWith(deps(t, js, nil), k, nil); !errors.Is(err, unix.EPERM) {
		t.Errorf("a failure other than a missing module: %v", err)
	}
	if _, err := newWith(deps(t, js, map[string]string{"WEFT_WIREGUARD_PATH": "ebpf"}), k, nil); err == nil ||
		!strings.Contains(err.Error(), `WEFT_WIREGUARD_PATH "ebpf"`) {
		t.Errorf("bad WEFT_WIREGUARD_PATH: %v", err)
	}
}

// Another node's BackendData, whatever it holds, is a peer or a reason.
func FuzzPeerLease(f *testing.F) {
	f.Add([]byte(`{"PublicKey":"mFbFz5EHuvQOEDqTx4G40Vc4JadFEIgOnUCO0Ckr0Wo=","Port":51820}`), []byte(nil))
	f.Add([]byte(`{"PublicKey":1}`), []byte(`{"PublicKey":"mFbFz5EHuvQOEDqTx4G40Vc4JadFEIgOnUCO0Ckr0Wo=","Port":-1}`))
	f.Fuzz(func(t *testing.T, data, data6 []byte) {
		own := lease.Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24"), IPv6Subnet: netip.MustParsePrefix("fd00:10:244:1::/64")}
		for _, opts := range []string{"", `,"Mode":"auto"`} {
			k := backendtest.NewLinks()
			b, err := newWith(deps(t, strings.ReplaceAll(dual, "%s", opts), nil), k, fakePath{newFakeControl(), k})
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
	k := backendtest.NewLinks()
	kp := &kernel{k: k, ctl: newFakeControl(DeviceName)}
	if err := kp.ensure(DeviceName, 1420); err != nil {
		t.Fatal(err)
	}
	l := k.ByName[DeviceName]
	if !slices.Equal(k.Calls, []string{"add wireguard"}) || l.Type() != "wireguard" || l.Attrs().MTU != 1420 {
		t.Fatalf("calls %v, link %+v; want one wireguard link flannel-wg mtu 1420", k.Calls, l)
	}
	if err := kp.ensure(DeviceName, 1420); err != nil || len(k.Calls) != 1 {
		t.Errorf("an existing device: err %v, calls %v", err, k.Calls)
	}
	k.ByName[DeviceNameV6] = &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: DeviceNameV6}}
	if err := kp.ensure(DeviceNameV6, 1420); err == nil || !strings.Contains(err.Error(), "exists as a tuntap device") ||
		!strings.Contains(err.Error(), "WEFT_WIREGUARD_PATH=userspace") {
		t.Errorf("a TUN where a kernel device should be: %v", err)
	}
}
