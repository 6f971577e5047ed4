package kube

import (
	"maps"
	"strings"
	"testing"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/subnet"
)

// FuzzParseNode feeds parseNode whatever anyone with nodes/status access
// could write. It must never panic, and a lease it accepts must be one the
// rest of weft can use: subnets inside the network, a key that parses back,
// a flannel JSON value that round-trips; publishing what was read must
// change nothing. The seed corpus is in testdata/fuzz/FuzzParseNode:
//
//	go test ./internal/store/kube/ -run '^$' -fuzz FuzzParseNode -fuzztime 30s
func FuzzParseNode(f *testing.F) {
	vx := `{"VNI":1,"VtepMAC":"22:56:a3:21:8b:8d"}`
	f.Add(uint8(0), "10.244.1.0/24", "true", "vxlan", vx, "192.168.1.10", "", "")
	f.Add(uint8(2), "10.244.1.0/24,fd00:10:244:1::/64", "true", "vxlan", vx, "192.168.1.10", vx, "fd99::10")
	f.Add(uint8(1), "fd00:10:244:1::/64", "true", "host-gw", "", "", "null", "fd99::10")
	f.Add(uint8(0), "10.244.1.0/24", "true", "", "null", "0.0.0.0", "", "")
	f.Add(uint8(0), "", "", "", "", "", "", "")
	f.Add(uint8(0), "10.244.1.0", "true", "vxlan", `{"VNI":`, "::ffff:10.0.0.1", "", "")
	networks := []*config.NetConf{
		mustNetConf(f, netConfV4),
		mustNetConf(f, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`),
		mustNetConf(f, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`),
	}
	k := newKeys(DefaultPrefix)
	f.Fuzz(func(t *testing.T, net uint8, cidrs, managed, typ, data, ip, v6data, ip6 string) {
		cfg := networks[int(net)%len(networks)]
		n := node{Name: "n", Annotations: map[string]string{k.managed: managed, k.backendType: typ,
			k.backendData: data, k.publicIP: ip, k.backendV6Data: v6data, k.publicIPv6: ip6}}
		if cidrs != "" {
			n.PodCIDRs = strings.Split(cidrs, ",")
		}
		l, err := k.parseNode(cfg, n)
		if err != nil {
			return
		}
		checkLease(t, cfg, l)
		want, err := k.published(l.Attrs, overwrites{})
		if err != nil {
			t.Fatalf("publish what was read: %v", err)
		}
		again := node{Name: "n", PodCIDRs: n.PodCIDRs, Annotations: maps.Clone(n.Annotations)}
		maps.Copy(again.Annotations, want) // as the strategic merge patch does
		l2, err := k.parseNode(cfg, again)
		if err != nil || !l2.Equal(l) {
			t.Fatalf("published %v and read back %+v, %v; want %+v", want, l2, err, l)
		}
	})
}

func checkLease(t *testing.T, cfg *config.NetConf, l lease.Lease) {
	t.Helper()
	for _, f := range cfg.Families() {
		s := l.Subnet
		if f.Network.Addr().Is6() {
			s = l.IPv6Subnet
		}
		if !s.IsValid() || !subnet.Contains(f.Network, s) || s.Masked() != s {
			t.Fatalf("subnet %s not a subnet of %s", s, f.Network)
		}
	}
	v4, v6, err := lease.ParseKey(l.Key())
	if err != nil || v4 != l.Subnet || v6 != l.IPv6Subnet {
		t.Fatalf("key %q parses to %s %s %v", l.Key(), v4, v6, err)
	}
	v, err := l.Attrs.MarshalJSON()
	if err != nil {
		t.Fatalf("encode %+v: %v", l.Attrs, err)
	}
	a, err := lease.ParseAttrs(v)
	if err != nil || !a.Equal(l.Attrs) {
		t.Fatalf("value %s reads back as %+v, %v", v, a, err)
	}
}
