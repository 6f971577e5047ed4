//go:build linux

package daemon

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/lease"
)

func snapNetConf(t testing.TB, text string) *config.NetConf {
	t.Helper()
	nc, _, err := config.ParseNetConf([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return nc
}

func snapLease(t testing.TB, key, value string) lease.Lease {
	t.Helper()
	l, err := decodeLease(snapshotLease{Key: key, Value: json.RawMessage(value)})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

const snapStore = "etcd /coreos.com/network http://192.168.100.2:2379"

func validSnapshot(t testing.TB, written time.Time) []byte {
	t.Helper()
	nc := snapNetConf(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}`)
	own := snapLease(t, "10.244.1.0-24", `{"PublicIP":"192.168.100.11","PublicIPv6":null,"BackendType":"udp"}`)
	peers := []lease.Lease{
		snapLease(t, "10.244.2.0-24", `{"PublicIP":"192.168.100.12","PublicIPv6":null}`),
		snapLease(t, "10.244.3.0-24", `{"PublicIP":"192.168.100.13","PublicIPv6":null,"BackendType":"udp"}`),
	}
	b, err := encodeSnapshot(written, snapStore, nc, own, peers)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// What one weftd writes the next one reads back whole: the configuration,
// the own lease and every peer, flannel's values intact.
func TestSnapshotRoundTrip(t *testing.T) {
	now := time.Now()
	sn, err := decodeSnapshot(validSnapshot(t, now.Add(-time.Minute)), snapStore, now)
	if err != nil {
		t.Fatal(err)
	}
	if *sn.nc != *snapNetConf(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}`) {
		t.Errorf("netconf %+v", sn.nc)
	}
	if sn.own.Key() != "10.244.1.0-24" || sn.own.Attrs.PublicIP != netip.MustParseAddr("192.168.100.11") {
		t.Errorf("own %+v", sn.own)
	}
	if len(sn.peers) != 2 || sn.peers[0].Attrs.BackendType != "" || sn.peers[1].Key() != "10.244.3.0-24" {
		t.Errorf("peers %+v", sn.peers)
	}
}

// A snapshot that is corrupt, of another store or network, stale or from
// the future is refused with a reason that says which.
func TestSnapshotRefused(t *testing.T) {
	now := time.Now()
	good := validSnapshot(t, now)
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(good, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"truncated", good[:len(good)/2], "corrupt"},
		{"empty", nil, "corrupt"},
		{"not json", []byte("{not json"), "corrupt"},
		{"version", edit(func(m map[string]any) { m["version"] = 7 }), "format version 7"},
		{"other store", edit(func(m map[string]any) { m["store"] = "etcd /other http://10.0.0.1:2379" }), "another store"},
		{"stale", validSnapshot(t, now.Add(-25*time.Hour)), "stale"},
		{"future", validSnapshot(t, now.Add(time.Hour)), "future"},
		{"no netconf", edit(func(m map[string]any) { delete(m, "netconf") }), "no network configuration"},
		{"other network", edit(func(m map[string]any) { m["own"].(map[string]any)["key"] = "10.99.1.0-24" }), "of another network"},
		{"bad own key", edit(func(m map[string]any) { m["own"].(map[string]any)["key"] = "10.244.1.0" }), "corrupt own lease"},
		{"bad peer value", edit(func(m map[string]any) {
			m["peers"].([]any)[0].(map[string]any)["value"] = map[string]any{"PublicIP": "not an address"}
		}), "corrupt peer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeSnapshot(tc.data, snapStore, now)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("decode = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestReadSnapshotMissing(t *testing.T) {
	if _, err := readSnapshot(filepath.Join(t.TempDir(), "none"), snapStore, time.Now()); err != errNoSnapshot {
		t.Errorf("missing file: %v, want errNoSnapshot", err)
	}
}

// The file may hold a WireGuard PSK from net-conf.json: 0600.
func TestWriteSnapshotMode(t *testing.T) {
	path := SnapshotPath(filepath.Join(t.TempDir(), "subnet.env"))
	if err := writeSnapshot(path, validSnapshot(t, time.Now())); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("snapshot file %v mode %v, want 0600", err, st.Mode())
	}
}

func TestStoreIdentity(t *testing.T) {
	a := config.Defaults()
	b := config.Defaults()
	b.EtcdEndpoints = []string{b.EtcdEndpoints[1], b.EtcdEndpoints[0]}
	if storeIdentity(&a) != storeIdentity(&b) {
		t.Error("the order of the endpoints changed the store's identity")
	}
	b.EtcdPrefix = "/other"
	if storeIdentity(&a) == storeIdentity(&b) {
		t.Error("another prefix is the same store")
	}
	b = config.Defaults()
	b.KubeSubnetMgr = true
	if storeIdentity(&a) == storeIdentity(&b) {
		t.Error("kube mode is the same store as etcd")
	}
}

// Whatever the file holds, decoding returns an error or a snapshot whose own
// lease lies in its network, and never panics.
func FuzzDecodeSnapshot(f *testing.F) {
	now := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	f.Add(validSnapshot(f, now))
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":1,"written":"2026-11-29T00:00:00Z","store":"` + snapStore + `","netconf":{},"own":{"key":"0.0.0.0-0"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		sn, err := decodeSnapshot(data, snapStore, now)
		if err != nil {
			return
		}
		for _, fam := range sn.nc.Families() {
			s := sn.own.Subnet
			if fam.Network.Addr().Is6() {
				s = sn.own.IPv6Subnet
			}
			if !fam.Network.Contains(s.Addr()) {
				t.Fatalf("accepted own lease %s outside %s", sn.own.Key(), fam.Network)
			}
		}
	})
}
