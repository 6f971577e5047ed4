//go:build linux

package udp

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/backend/tunnel"
	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/store"
)

func testBackend(t *testing.T) *UDP {
	t.Helper()
	nc, _, err := config.ParseNetConf([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}`))
	if err != nil {
		t.Fatal(err)
	}
	u, err := NewWithOptions(backend.Deps{Net: nc, External: backend.External{Name: "eth0", MTU: 1500,
		PublicIP: netip.MustParseAddr("192.168.100.11")}}, tunnel.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func parseLease(t *testing.T, key, value string) lease.Lease {
	t.Helper()
	l, err := store.Decode(nil, key, []byte(value), false)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// A lease written by flannel's udp backend has no BackendType; on a udp
// network it is a peer like weft's own udp leases. Leases of other backends
// are not.
func TestPeerAcceptsFlannelUDPLease(t *testing.T) {
	u := testBackend(t)
	own := parseLease(t, "10.244.1.0-24", `{"PublicIP":"192.168.100.11","PublicIPv6":null,"BackendType":"udp"}`)
	cases := []struct {
		key, value string
		ok         bool
	}{
		{"10.244.2.0-24", `{"PublicIP":"192.168.100.12","PublicIPv6":null}`, true}, // flannel v0.28 udp, byte for byte
		{"10.244.3.0-24", `{"PublicIP":"192.168.100.13","PublicIPv6":null,"BackendType":"udp"}`, true},
		{"10.244.4.0-24", `{"PublicIP":"192.168.100.14","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"22:56:a3:21:8b:8d"}}`, false},
		{"10.244.5.0-24", `{"PublicIP":"192.168.100.15","PublicIPv6":null,"BackendType":"host-gw"}`, false},
	}
	for _, c := range cases {
		_, err := u.Peer(own, parseLease(t, c.key, c.value))
		if (err == nil) != c.ok {
			t.Errorf("Peer(%s) = %v, want ok=%v", c.value, err, c.ok)
		}
	}
	if ep, ok := u.eng.Lookup(netip.MustParseAddr("10.244.2.7")); !ok || ep != netip.MustParseAddrPort("192.168.100.12:8285") {
		t.Errorf("flannel's udp peer: lookup 10.244.2.7 = %v, want endpoint 192.168.100.12:8285", ep)
	}
	if ep, ok := u.eng.Lookup(netip.MustParseAddr("10.244.4.7")); ok {
		t.Errorf("a vxlan lease became a udp peer: %v", ep)
	}
	// weft's own udp lease keeps "BackendType":"udp" (flannel ignores it).
	a, err := u.Attrs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := a.MarshalJSON()
	if got, want := string(b), `{"PublicIP":"192.168.100.11","PublicIPv6":null,"BackendType":"udp"}`; got != want {
		t.Errorf("own lease value %s, want %s", got, want)
	}
}

// On any other network a lease with no BackendType is not a peer.
func TestPeerCheckRejectsEmptyTypeElsewhere(t *testing.T) {
	own := parseLease(t, "10.244.1.0-24", `{"PublicIP":"192.168.100.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"22:56:a3:21:8b:8d"}}`)
	flannelUDP := parseLease(t, "10.244.2.0-24", `{"PublicIP":"192.168.100.12","PublicIPv6":null}`)
	for _, bt := range []string{"vxlan", "host-gw"} {
		err := backend.PeerCheck(own, flannelUDP, bt)
		if err == nil || !strings.Contains(err.Error(), `its BackendType "" is not this node's "`+bt+`"`) {
			t.Errorf("%s network: PeerCheck of a lease with no BackendType = %v", bt, err)
		}
	}
}
