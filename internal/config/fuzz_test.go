package config

import (
	"encoding/json"
	"errors"
	"testing"
)

// FuzzParseNetConf: the parser never panics; every error wraps ErrNetConf;
// every accepted config has usable pools inside its networks and a known
// backend.
func FuzzParseNetConf(f *testing.F) {
	for _, s := range []string{
		`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`,
		`{"Network":"10.0.0.0/28","SubnetLen":30,"SubnetMin":"10.0.0.4","SubnetMax":"10.0.0.8"}`,
		`{"network":"10.1.0.0/16","backend":{"type":"host-gw"}}`,
		`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","IPv6SubnetLen":64}`,
		`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/124"}`,
		`{"Network":"10.0.0.0/8","Backend":{"Type":"wireguard","PSK":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","Mode":"auto"}}`,
		`{"Network":"10.0.0.0/8","Backend":{"Type":"udp","Port":8285}}`,
		`{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan","VNI":"one","MacPrefix":"0E-2A"}}`,
		`{"Network":"10.0.0.0/29"}`, `[]`, `null`, `{"Network":null}`, `{"Backend":null,"Network":"1.0.0.0/8"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, _, err := ParseNetConf(data)
		if err != nil {
			if !errors.Is(err, ErrNetConf) {
				t.Fatalf("error %v does not wrap ErrNetConf", err)
			}
			return
		}
		if len(c.Families()) == 0 {
			t.Fatal("accepted a config with no family")
		}
		for _, fam := range c.Families() {
			p, err := fam.Pool()
			if err != nil {
				t.Fatalf("accepted %+v but its pool is invalid: %v", fam, err)
			}
			if !fam.Network.Contains(p.First().Addr()) || !fam.Network.Contains(p.Last().Addr()) {
				t.Fatalf("pool of %+v leaves the network", fam)
			}
		}
		if c.Backend.Type == "" {
			t.Fatal("accepted a config with no backend type")
		}
		if o := c.Backend.Options; o != "" && (o[0] != '{' || !json.Valid([]byte(o))) {
			t.Fatalf("backend options %q are not a JSON object", o)
		}
	})
}
