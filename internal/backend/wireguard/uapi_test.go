//go:build linux

package wireguard

import (
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// The in-process control speaks wireguard-go's own UAPI: the peer sync
// configures a real (down, unprivileged) wireguard-go device through it and
// reads back exactly what it wrote.
func TestUserspaceControlRoundTrip(t *testing.T) {
	dev := device.NewDevice(tuntest.NewChannelTUN().TUN(), conn.NewStdNetBind(), device.NewLogger(device.LogLevelSilent, ""))
	defer dev.Close()
	u := newUserspace(slog.New(slog.DiscardHandler), t.TempDir())
	u.devs[DeviceName] = &goDevice{dev: dev}
	ps, priv, psk := newTestSync(t, u)
	a, b := genKey(t).PublicKey(), genKey(t).PublicKey()
	ps.set("l1", map[string]peerSpec{DeviceName: spec(a, "192.168.1.2:51820", "10.244.1.0/24")})
	ps.set("l2", map[string]peerSpec{DeviceName: spec(b, "[fd00::3]:51821", "10.244.2.0/24", "fd00:10:244:2::/64")})
	if st := mustSync(t, ps); st.added != 2 {
		t.Fatalf("sync %+v", st)
	}
	d, err := u.Device(DeviceName)
	if err != nil {
		t.Fatal(err)
	}
	if d.PrivateKey != priv.key() || d.PublicKey != priv.public() || d.ListenPort != 51820 || len(d.Peers) != 2 {
		t.Fatalf("device read back: port %d, %d peers", d.ListenPort, len(d.Peers))
	}
	for _, p := range d.Peers {
		want := map[bool]peerSpec{true: spec(a, "192.168.1.2:51820", "10.244.1.0/24"),
			false: spec(b, "[fd00::3]:51821", "10.244.2.0/24", "fd00:10:244:2::/64")}[p.PublicKey == a]
		var got []netip.Prefix
		for _, n := range p.AllowedIPs {
			pf, _ := prefixOf(n)
			got = append(got, pf)
		}
		if p.Endpoint.AddrPort() != want.endpoint || !ps.sameSettings(p, want) || p.PresharedKey != psk.key() ||
			p.PersistentKeepaliveInterval != 25*time.Second {
			t.Errorf("peer %s read back: endpoint %s allowed %v", p.PublicKey, p.Endpoint, got)
		}
	}
	// Nothing differs, so nothing is written.
	if st := mustSync(t, ps); st != (syncStats{}) {
		t.Errorf("second sync %+v", st)
	}
	ps.forget("l1")
	mustSync(t, ps)
	if d, _ := u.Device(DeviceName); len(d.Peers) != 1 || d.Peers[0].PublicKey != b {
		t.Errorf("after forget: %d peers", len(d.Peers))
	}
}

func FuzzParseDevice(f *testing.F) {
	f.Add("private_key=0000000000000000000000000000000000000000000000000000000000000000\nlisten_port=51820\npublic_key=0101010101010101010101010101010101010101010101010101010101010101\nendpoint=[fd00::1]:5\nallowed_ip=10.0.0.0/24\nerrno=0\n")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseDevice("x", s)
		if err == nil && d == nil {
			t.Fatal("nil device without an error")
		}
	})
}
