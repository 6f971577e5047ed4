package storetest

import (
	"testing"

	"github.com/weft-net/weft/internal/lease"
)

// flannelLeases are lease values exactly as flannel v0.28 writes them, per
// backend weft has, with what weft must read from them and the value a weft
// node of that backend writes (flannel's bytes, except that weft's udp lease
// carries "BackendType":"udp", which flannel ignores).
var flannelLeases = []struct {
	backend, netconf, name, flannel, weft, wantType string
}{
	{"vxlan", `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`, "10.5.34.0-24",
		`{"PublicIP":"192.168.10.4","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"22:56:a3:21:8b:8d"}}`,
		`{"PublicIP":"192.168.10.4","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"22:56:a3:21:8b:8d"}}`, "vxlan"},
	{"vxlan dual-stack", `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}`,
		"10.5.35.0-24&fd00:5:0:23::-64",
		`{"PublicIP":"192.168.10.5","PublicIPv6":"fd99::5","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"22:56:a3:21:8b:8e"},"BackendV6Data":{"VNI":1,"VtepMAC":"22:56:a3:21:8b:8f"}}`,
		`{"PublicIP":"192.168.10.5","PublicIPv6":"fd99::5","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"22:56:a3:21:8b:8e"},"BackendV6Data":{"VNI":1,"VtepMAC":"22:56:a3:21:8b:8f"}}`, "vxlan"},
	{"host-gw", `{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}`, "10.5.36.0-24",
		`{"PublicIP":"192.168.10.6","PublicIPv6":null,"BackendType":"host-gw"}`,
		`{"PublicIP":"192.168.10.6","PublicIPv6":null,"BackendType":"host-gw"}`, "host-gw"},
	{"udp", `{"Network":"10.5.0.0/16","Backend":{"Type":"udp"}}`, "10.5.37.0-24",
		`{"PublicIP":"192.168.10.7","PublicIPv6":null}`,
		`{"PublicIP":"192.168.10.7","PublicIPv6":null,"BackendType":"udp"}`, ""},
}

// Every backend's lease, as flannel writes it byte for byte, is read with
// its fields intact (a udp lease with no BackendType stays without one: the
// udp backend, not the store, decides that it is a udp peer), and a weft node
// with the same identity takes it over and writes flannel's value back.
func testFlannelValuesPerBackend(t *testing.T, h Harness) {
	for _, c := range flannelLeases {
		t.Run(c.backend, func(t *testing.T) {
			s := h.Store(t, quiet())
			cfg := mustConfig(t, h, s, c.netconf)
			h.Put(t, c.name, c.flannel, false)
			got, ok := keys(list(t, s).Leases)[c.name]
			if !ok {
				t.Fatalf("flannel's %s lease %s was not listed", c.backend, c.flannel)
			}
			if got.Attrs.BackendType != c.wantType {
				t.Errorf("BackendType %q, want %q", got.Attrs.BackendType, c.wantType)
			}
			b, err := got.Attrs.MarshalJSON()
			if err != nil || string(b) != c.flannel {
				t.Errorf("read back as %s (%v), want flannel's %s", b, err, c.flannel)
			}
			want, err := lease.ParseAttrs([]byte(c.weft))
			if err != nil {
				t.Fatal(err)
			}
			l := acquire(t, s, cfg, want)
			if l.Key() != c.name {
				t.Fatalf("a weft node with the flannel node's address took %s, want %s", l.Key(), c.name)
			}
			if v, _, _ := h.Get(t, c.name); v != c.weft {
				t.Errorf("weft wrote %s, want %s", v, c.weft)
			}
			h.Delete(t, c.name)
		})
	}
}
