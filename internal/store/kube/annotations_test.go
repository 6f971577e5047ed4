package kube

import (
	"encoding/json"
	"errors"
	"maps"
	"net/netip"
	"strings"
	"testing"

	"github.com/weft-net/weft/internal/lease"
)

const (
	mac1  = "22:56:a3:21:8b:8d"
	mac2  = "22:56:a3:21:8b:8e"
	wgKey = "e1G4kNXbqoFtZbXNBsJKUeQPMVT8P0aUVHTeb9jbD2E="
)

func attrsOf(v4, v6, typ, data, v6data string) lease.Attrs {
	a := lease.Attrs{BackendType: typ}
	if v4 != "" {
		a.PublicIP = netip.MustParseAddr(v4)
	}
	if v6 != "" {
		a.PublicIPv6 = netip.MustParseAddr(v6)
	}
	if data != "" {
		a.BackendData = json.RawMessage(data)
	}
	if v6data != "" {
		a.BackendV6Data = json.RawMessage(v6data)
	}
	return a
}

func prefixed(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[DefaultPrefix+"/"+k] = v
	}
	return out
}

// What flannel v0.28's kube subnet manager writes for each backend, value
// for value (AcquireLease: backend-data is json.RawMessage's encoding, so
// "null" when the backend has none).
func TestPublishedMatchesFlannel(t *testing.T) {
	vx := `{"VNI":1,"VtepMAC":"` + mac1 + `"}`
	vx6 := `{"VNI":1,"VtepMAC":"` + mac2 + `"}`
	wg := `{"PublicKey":"` + wgKey + `","Port":51820}`
	for _, tc := range []struct {
		name  string
		attrs lease.Attrs
		ov    overwrites
		want  map[string]string
	}{
		{"vxlan", attrsOf("192.168.10.4", "", "vxlan", vx, ""), overwrites{},
			map[string]string{"kube-subnet-manager": "true", "backend-type": "vxlan", "backend-data": vx, "public-ip": "192.168.10.4"}},
		{"vxlan dual-stack", attrsOf("192.168.10.4", "fd99::4", "vxlan", vx, vx6), overwrites{},
			map[string]string{"kube-subnet-manager": "true", "backend-type": "vxlan", "backend-data": vx, "public-ip": "192.168.10.4",
				"backend-v6-data": vx6, "public-ipv6": "fd99::4"}},
		{"vxlan IPv6 only", attrsOf("", "fd99::4", "vxlan", "", vx6), overwrites{},
			map[string]string{"kube-subnet-manager": "true", "backend-type": "vxlan", "backend-v6-data": vx6, "public-ipv6": "fd99::4"}},
		{"host-gw", attrsOf("192.168.10.4", "", "host-gw", "", ""), overwrites{},
			map[string]string{"kube-subnet-manager": "true", "backend-type": "host-gw", "backend-data": "null", "public-ip": "192.168.10.4"}},
		{"host-gw dual-stack", attrsOf("192.168.10.4", "fd99::4", "host-gw", "", ""), overwrites{},
			map[string]string{"kube-subnet-manager": "true", "backend-type": "host-gw", "backend-data": "null", "public-ip": "192.168.10.4",
				"backend-v6-data": "null", "public-ipv6": "fd99::4"}},
		{"host-gw IPv6 only", attrsOf("", "fd99::4", "host-gw", "", ""), overwrites{},
			map[string]string{"kube-subnet-manager": "true", "backend-type": "host-gw", "backend-data": "null", "public-ip": "0.0.0.0",
				"backend-v6-data": "null", "public-ipv6": "fd99::4"}},
		{"udp (weft)", attrsOf("192.168.10.4", "", "udp", "", ""), overwrites{},
			map[string]string{"kube-subnet-manager": "true", "backend-type": "udp", "backend-data": "null", "public-ip": "192.168.10.4"}},
		{"udp (flannel: no type)", attrsOf("192.168.10.4", "", "", "", ""), overwrites{},
			map[string]string{"kube-subnet-manager": "true", "backend-type": "", "backend-data": "null", "public-ip": "192.168.10.4"}},
		{"ipip with IPv6 address", attrsOf("192.168.10.4", "fd99::4", "ipip", "", ""), overwrites{},
			map[string]string{"kube-subnet-manager": "true", "backend-type": "ipip", "backend-data": "null", "public-ip": "192.168.10.4"}},
		{"wireguard", attrsOf("192.168.10.4", "", "wireguard", wg, ""), overwrites{},
			map[string]string{"kube-subnet-manager": "true", "backend-type": "wireguard", "backend-data": wg, "public-ip": "192.168.10.4"}},
		{"data re-encoded compact", attrsOf("192.168.10.4", "", "vxlan", "{ \"VNI\": 1,\n \"VtepMAC\": \""+mac1+"\" }", ""), overwrites{},
			map[string]string{"kube-subnet-manager": "true", "backend-type": "vxlan", "backend-data": vx, "public-ip": "192.168.10.4"}},
		{"overwrites", attrsOf("192.168.10.4", "fd99::4", "host-gw", "", ""),
			overwrites{netip.MustParseAddr("203.0.113.4"), netip.MustParseAddr("2001:db8::4")},
			map[string]string{"kube-subnet-manager": "true", "backend-type": "host-gw", "backend-data": "null", "public-ip": "203.0.113.4",
				"backend-v6-data": "null", "public-ipv6": "2001:db8::4"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := newKeys(DefaultPrefix).published(tc.attrs, tc.ov)
			if err != nil {
				t.Fatal(err)
			}
			if want := prefixed(tc.want); !maps.Equal(got, want) {
				t.Errorf("published\n%v\nwant\n%v", got, want)
			}
		})
	}
}

func TestKeysPrefix(t *testing.T) {
	for prefix, want := range map[string]string{
		"flannel.alpha.coreos.com": "flannel.alpha.coreos.com/public-ip",
		"example.com/net":          "example.com/net-public-ip",
		"example.com/net-":         "example.com/net-public-ip",
		"example.com/":             "example.com/public-ip",
	} {
		if got := newKeys(prefix).publicIP; got != want {
			t.Errorf("prefix %q: %q, want %q", prefix, got, want)
		}
	}
}

// A Node exactly as a flannel node leaves it (kubectl get node -o yaml on a
// flannel v0.28 cluster), and as a dual-stack one does.
func TestParseFlannelNode(t *testing.T) {
	k := newKeys(DefaultPrefix)
	n := k.strip(kubeNode("node-b", []string{"10.244.1.0/24"}, map[string]string{
		"backend-data": `{"VNI":1,"VtepMAC":"6a:d0:ad:66:4f:66"}`, "backend-type": "vxlan",
		"kube-subnet-manager": "true", "public-ip": "192.168.1.10"}))
	l, err := k.parseNode(mustNetConf(t, netConfV4), n)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := l.Attrs.MarshalJSON()
	if l.Key() != "10.244.1.0-24" ||
		string(v) != `{"PublicIP":"192.168.1.10","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"6a:d0:ad:66:4f:66"}}` {
		t.Errorf("lease %s %s", l.Key(), v)
	}

	dual := mustNetConf(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`)
	n = k.strip(kubeNode("node-c", []string{"10.244.2.0/24", "fd00:10:244:2::/64"}, map[string]string{
		"backend-data": `{"VNI":1,"VtepMAC":"` + mac1 + `"}`, "backend-v6-data": `{"VNI":1,"VtepMAC":"` + mac2 + `"}`,
		"backend-type": "vxlan", "kube-subnet-manager": "true", "public-ip": "192.168.1.11", "public-ipv6": "fd99::11"}))
	if l, err = k.parseNode(dual, n); err != nil {
		t.Fatal(err)
	}
	if l.Key() != "10.244.2.0-24&fd00:10:244:2::-64" || l.Attrs.PublicIPv6.String() != "fd99::11" ||
		string(l.Attrs.BackendV6Data) != `{"VNI":1,"VtepMAC":"`+mac2+`"}` {
		t.Errorf("dual-stack lease %s %+v", l.Key(), l.Attrs)
	}
	// The same node read by an IPv4-only network: its IPv6 parts ignored.
	if l, err = k.parseNode(mustNetConf(t, netConfV4), n); err != nil || l.Key() != "10.244.2.0-24" || l.Attrs.PublicIPv6.IsValid() {
		t.Errorf("IPv4 view: %s %+v %v", l.Key(), l.Attrs, err)
	}
}

// Published annotations read back as the same attributes.
func TestPublishParseRoundTrip(t *testing.T) {
	k := newKeys(DefaultPrefix)
	dual := mustNetConf(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"host-gw"}}`)
	for _, a := range []lease.Attrs{
		attrsOf("192.168.10.4", "fd99::4", "vxlan", `{"VNI":1,"VtepMAC":"`+mac1+`"}`, `{"VNI":1,"VtepMAC":"`+mac2+`"}`),
		attrsOf("192.168.10.4", "fd99::4", "host-gw", "", ""),
		attrsOf("192.168.10.4", "fd99::4", "wireguard", `{"PublicKey":"`+wgKey+`","Port":51820}`, `{"PublicKey":"`+wgKey+`","Port":51821}`),
	} {
		ann, err := k.published(a, overwrites{})
		if err != nil {
			t.Fatal(err)
		}
		n := node{Name: "x", PodCIDRs: []string{"10.244.3.0/24", "fd00:10:244:3::/64"}, Annotations: ann}
		l, err := k.parseNode(dual, n)
		if err != nil || !l.Attrs.Equal(a) {
			t.Errorf("%s: read back %+v, %v; want %+v", a.BackendType, l.Attrs, err, a)
		}
	}
}

func TestParseMalformed(t *testing.T) {
	k := newKeys(DefaultPrefix)
	nc := mustNetConf(t, netConfV4)
	good := func() map[string]string { return prefixed(peerAnn("192.168.1.10", mac1)) }
	with := func(key, v string) map[string]string { a := good(); a[DefaultPrefix+"/"+key] = v; return a }
	without := func(key string) map[string]string { a := good(); delete(a, DefaultPrefix+"/"+key); return a }
	cidr := []string{"10.244.1.0/24"}
	for _, tc := range []struct {
		name  string
		cidrs []string
		ann   map[string]string
		want  string // in the error; "" for errNotManaged
	}{
		{"no annotations at all", cidr, nil, ""},
		{"not managed", cidr, with("kube-subnet-manager", "yes"), ""},
		{"no public-ip", cidr, without("public-ip"), "public-ip is missing"},
		{"public-ip not an address", cidr, with("public-ip", "node-b"), `public-ip "node-b" is not an IPv4`},
		{"public-ip IPv6", cidr, with("public-ip", "fd00::1"), "is not an IPv4"},
		{"public-ip with zone", cidr, with("public-ip", "fe80::1%eth0"), "is not an IPv4"},
		{"backend-data not JSON", cidr, with("backend-data", `{"VNI":`), "backend-data"},
		{"no podCIDR", nil, good(), "has no IPv4 podCIDR"},
		{"podCIDR garbage", []string{"10.244.1.0"}, good(), "is not a CIDR"},
		{"podCIDR outside", []string{"10.9.1.0/24"}, good(), "podCIDR 10.9.1.0/24 of node n is not inside network 10.244.0.0/16"},
		{"three podCIDRs", []string{"10.244.1.0/24", "fd00::/64", "10.244.2.0/24"}, good(), "3 podCIDRs"},
		{"two IPv4 podCIDRs", []string{"10.244.1.0/24", "10.244.2.0/24"}, good(), "two of one address family"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := k.parseNode(nc, node{Name: "n", PodCIDRs: tc.cidrs, Annotations: tc.ann})
			switch {
			case tc.want == "" && !errors.Is(err, errNotManaged):
				t.Errorf("err %v, want errNotManaged", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("err %v, want one containing %q", err, tc.want)
			}
		})
	}
	// backend-data absent or "null" is no data, not an error (host-gw).
	for _, v := range []string{"", "null", " null "} {
		l, err := k.parseNode(nc, node{Name: "n", PodCIDRs: cidr, Annotations: with("backend-data", v)})
		if err != nil || l.Attrs.BackendData != nil {
			t.Errorf("backend-data %q: %+v %v", v, l.Attrs, err)
		}
	}
	// "0.0.0.0" (flannel's unset address) reads as unset.
	if l, err := k.parseNode(nc, node{Name: "n", PodCIDRs: cidr, Annotations: with("public-ip", "0.0.0.0")}); err != nil || l.Attrs.PublicIP.IsValid() {
		t.Errorf("0.0.0.0: %+v %v", l.Attrs, err)
	}
}
