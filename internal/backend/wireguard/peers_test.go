//go:build linux

package wireguard

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func genKey(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newTestSync(t *testing.T, ctl control) (*peerSync, secret, secret) {
	priv, psk := secret{genKey(t)}, secret{genKey(t)}
	ps := newPeerSync(ctl, slog.New(slog.DiscardHandler), priv, psk, 25*time.Second, map[string]int{DeviceName: 51820})
	return ps, priv, psk
}

func mustSync(t *testing.T, ps *peerSync) syncStats {
	t.Helper()
	st, err := ps.sync()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func spec(k wgtypes.Key, ep string, allowed ...string) peerSpec {
	s := peerSpec{key: k, endpoint: netip.MustParseAddrPort(ep)}
	for _, a := range allowed {
		s.allowed = append(s.allowed, netip.MustParsePrefix(a))
	}
	return s
}

// The device's peers follow the leases: added with the lease's endpoint,
// allowed IPs, the PSK and the keepalive; restored when removed or changed
// by hand; removed when the lease goes; and the device's key and port are
// restored too.
func TestPeerSyncDesiredState(t *testing.T) {
	ctl := newFakeControl(DeviceName)
	ps, priv, psk := newTestSync(t, ctl)
	a, b := genKey(t).PublicKey(), genKey(t).PublicKey()
	ps.set("10.244.1.0-24", map[string]peerSpec{DeviceName: spec(a, "192.168.1.2:51820", "10.244.1.0/24")})
	ps.set("10.244.2.0-24", map[string]peerSpec{DeviceName: spec(b, "192.168.1.3:51820", "10.244.2.0/24")})
	if st := mustSync(t, ps); st.added != 2 {
		t.Fatalf("first sync %+v, want 2 added", st)
	}
	d, _ := ctl.Device(DeviceName)
	if d.PrivateKey != priv.key() || d.ListenPort != 51820 {
		t.Errorf("device key/port not set: port %d", d.ListenPort)
	}
	p, ok := ctl.peer(DeviceName, a)
	if !ok || p.Endpoint.String() != "192.168.1.2:51820" || len(p.AllowedIPs) != 1 || p.AllowedIPs[0].String() != "10.244.1.0/24" ||
		p.PresharedKey != psk.key() || p.PersistentKeepaliveInterval != 25*time.Second {
		t.Fatalf("peer a = %+v", p)
	}
	if st := mustSync(t, ps); st != (syncStats{}) || ctl.configs != 1 {
		t.Errorf("a second sync wrote %+v (%d configure calls); want nothing", st, ctl.configs)
	}

	// By hand: a removed, b's allowed IPs changed and its PSK cleared, the
	// device's port changed.
	ctl.edit(DeviceName, func(d *wgtypes.Device) {
		d.Peers = d.Peers[1:]
		d.Peers[0].AllowedIPs = []net.IPNet{ipnet("10.0.0.0/8")}
		d.Peers[0].PresharedKey = wgtypes.Key{}
		d.ListenPort = 4000
	})
	if st := mustSync(t, ps); st.added != 1 || st.updated != 1 {
		t.Errorf("repair sync %+v, want 1 added 1 updated", st)
	}
	if p, _ := ctl.peer(DeviceName, b); len(p.AllowedIPs) != 1 || p.AllowedIPs[0].String() != "10.244.2.0/24" || p.PresharedKey != psk.key() {
		t.Errorf("peer b not repaired: %+v", p)
	}
	if d, _ := ctl.Device(DeviceName); d.ListenPort != 51820 {
		t.Errorf("listen port %d not restored", d.ListenPort)
	}

	// Roaming: WireGuard moved a's endpoint; sync leaves it.
	ctl.edit(DeviceName, func(d *wgtypes.Device) {
		for i := range d.Peers {
			if d.Peers[i].PublicKey == a {
				d.Peers[i].Endpoint = &net.UDPAddr{IP: net.IPv4(203, 0, 113, 9), Port: 40000}
			}
		}
	})
	mustSync(t, ps)
	if p, _ := ctl.peer(DeviceName, a); p.Endpoint.String() != "203.0.113.9:40000" {
		t.Errorf("a roamed endpoint was reset to %s", p.Endpoint)
	}
	// ...but a lease that moves the endpoint moves it.
	ps.set("10.244.1.0-24", map[string]peerSpec{DeviceName: spec(a, "192.168.1.22:51820", "10.244.1.0/24")})
	mustSync(t, ps)
	if p, _ := ctl.peer(DeviceName, a); p.Endpoint.String() != "192.168.1.22:51820" {
		t.Errorf("endpoint after the lease changed = %s", p.Endpoint)
	}

	// A new key for a's lease: the old peer goes, the new one comes.
	a2 := genKey(t).PublicKey()
	ps.set("10.244.1.0-24", map[string]peerSpec{DeviceName: spec(a2, "192.168.1.22:51820", "10.244.1.0/24")})
	mustSync(t, ps)
	if _, ok := ctl.peer(DeviceName, a); ok {
		t.Error("the peer of the old key is still there")
	}
	if _, ok := ctl.peer(DeviceName, a2); !ok {
		t.Error("the peer of the new key is missing")
	}
	ps.forget("10.244.2.0-24")
	if st := mustSync(t, ps); st.removed != 1 {
		t.Errorf("forget: %+v, want 1 removed", st)
	}
	if _, ok := ctl.peer(DeviceName, b); ok {
		t.Error("b's peer outlived its lease")
	}
}

// A peer this process did not write (its predecessor's) stays until every
// lease is known, then goes unless a lease wants it.
func TestPeerSyncPrunesOnlyAfterTheList(t *testing.T) {
	ctl := newFakeControl(DeviceName)
	ps, _, _ := newTestSync(t, ctl)
	stale, kept := genKey(t).PublicKey(), genKey(t).PublicKey()
	ctl.edit(DeviceName, func(d *wgtypes.Device) {
		d.Peers = []wgtypes.Peer{{PublicKey: stale, AllowedIPs: []net.IPNet{ipnet("10.244.9.0/24")}},
			{PublicKey: kept, AllowedIPs: []net.IPNet{ipnet("10.244.3.0/24")}}}
	})
	mustSync(t, ps)
	if _, ok := ctl.peer(DeviceName, stale); !ok {
		t.Fatal("a peer was removed before the leases were listed")
	}
	ps.set("10.244.3.0-24", map[string]peerSpec{DeviceName: spec(kept, "192.168.1.4:51820", "10.244.3.0/24")})
	ps.prune()
	if st := mustSync(t, ps); st.removed != 1 {
		t.Errorf("prune sync %+v, want 1 removed", st)
	}
	if _, ok := ctl.peer(DeviceName, stale); ok {
		t.Error("the stale peer survived the prune")
	}
	if _, ok := ctl.peer(DeviceName, kept); !ok {
		t.Error("a listed peer was pruned")
	}
}

// Two leases of one node (one key) are one peer with both subnets.
func TestPeerSyncMergesLeasesOfOneKey(t *testing.T) {
	ctl := newFakeControl(DeviceName)
	ps, _, _ := newTestSync(t, ctl)
	k := genKey(t).PublicKey()
	ps.set("10.244.1.0-24", map[string]peerSpec{DeviceName: spec(k, "192.168.1.2:51820", "10.244.1.0/24")})
	ps.set("10.244.7.0-24", map[string]peerSpec{DeviceName: spec(k, "192.168.1.2:51820", "10.244.7.0/24")})
	mustSync(t, ps)
	p, _ := ctl.peer(DeviceName, k)
	if len(p.AllowedIPs) != 2 {
		t.Errorf("allowed IPs %v, want both subnets", p.AllowedIPs)
	}
	ps.forget("10.244.1.0-24")
	mustSync(t, ps)
	if p, _ := ctl.peer(DeviceName, k); len(p.AllowedIPs) != 1 || p.AllowedIPs[0].String() != "10.244.7.0/24" {
		t.Errorf("after one lease went: %v", p.AllowedIPs)
	}
}

// A failed write is retried on the next sync.
func TestPeerSyncRetries(t *testing.T) {
	ctl := newFakeControl(DeviceName)
	ps, _, _ := newTestSync(t, ctl)
	ctl.fail = errors.New("device busy")
	k := genKey(t).PublicKey()
	ps.set("10.244.1.0-24", map[string]peerSpec{DeviceName: spec(k, "192.168.1.2:51820", "10.244.1.0/24")})
	if _, err := ps.sync(); err == nil {
		t.Fatal("sync hid the failure")
	}
	ctl.fail = nil
	mustSync(t, ps)
	if _, ok := ctl.peer(DeviceName, k); !ok {
		t.Error("the peer was not written after the failure")
	}
}

// weft status' view: every difference named, nothing written.
func TestPeerSyncDiff(t *testing.T) {
	ctl := newFakeControl(DeviceName)
	ps, _, _ := newTestSync(t, ctl)
	a, b, extra := genKey(t).PublicKey(), genKey(t).PublicKey(), genKey(t).PublicKey()
	ps.set("l1", map[string]peerSpec{DeviceName: spec(a, "192.168.1.2:51820", "10.244.1.0/24")})
	ps.set("l2", map[string]peerSpec{DeviceName: spec(b, "192.168.1.3:51820", "10.244.2.0/24")})
	mustSync(t, ps)
	if d, err := ps.diff(); err != nil || len(d) != 0 {
		t.Fatalf("in sync: %q %v", d, err)
	}
	ctl.edit(DeviceName, func(d *wgtypes.Device) {
		if d.Peers[0].PublicKey == a {
			d.Peers = d.Peers[1:]
		} else {
			d.Peers = d.Peers[:1]
		}
		d.Peers[0].AllowedIPs = []net.IPNet{ipnet("10.0.0.0/8")}
		d.Peers[0].Endpoint = &net.UDPAddr{IP: net.IPv4(203, 0, 113, 9), Port: 40000} // roamed: not a difference
		d.Peers = append(d.Peers, wgtypes.Peer{PublicKey: extra})
		d.ListenPort = 9
	})
	configs := ctl.configs
	got, err := ps.diff()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"flannel-wg listens on port 9, not 51820",
		"different wireguard peer " + b.String() + " on flannel-wg: allowed IPs, pre-shared key or keepalive not as configured",
		"extra wireguard peer " + extra.String() + " on flannel-wg",
		"missing wireguard peer " + a.String() + " on flannel-wg (endpoint 192.168.1.2:51820, allowed IPs [10.244.1.0/24])",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("diff:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if ctl.configs != configs {
		t.Error("diff wrote to the device")
	}
}

// A device whose peers cannot be read because nothing serves it is a
// difference, not a failure to tell.
func TestPeerSyncDiffUnreadable(t *testing.T) {
	u := newUserspace(slog.New(slog.DiscardHandler), t.TempDir())
	ps, _, _ := newTestSync(t, u)
	got, err := ps.diff()
	if err != nil || len(got) != 1 || !strings.Contains(got[0], "the wireguard peers of flannel-wg cannot be read") {
		t.Errorf("diff %q, err %v", got, err)
	}
}
