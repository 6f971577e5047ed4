package config

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseNetConfDefaults(t *testing.T) {
	tests := []struct {
		name, json       string
		v4len            int
		v4min, v4max     string
		v6len            int
		v6min, v6max     string
		backend          string
		warningSubstring string
	}{
		{name: "slash16", json: `{"Network":"10.244.0.0/16"}`, v4len: 24, v4min: "10.244.1.0", v4max: "10.244.254.0", backend: "vxlan"},
		{name: "slash22", json: `{"Network":"10.0.0.0/22"}`, v4len: 24, v4min: "10.0.1.0", v4max: "10.0.2.0", backend: "vxlan"},
		{name: "slash23", json: `{"Network":"10.0.0.0/23"}`, v4len: 25, v4min: "10.0.0.128", v4max: "10.0.1.0", backend: "vxlan"},
		{name: "slash28", json: `{"Network":"10.0.0.0/28"}`, v4len: 30, v4min: "10.0.0.4", v4max: "10.0.0.8", backend: "vxlan"},
		{name: "explicit len and range", json: `{"Network":"10.0.0.0/8","SubnetLen":20,"SubnetMin":"10.10.0.0","SubnetMax":"10.20.0.0"}`,
			v4len: 20, v4min: "10.10.0.0", v4max: "10.20.0.0", backend: "vxlan"},
		{name: "keys any case", json: `{"network":"10.1.0.0/16","SUBNETLEN":26,"backend":{"type":"HOST-GW"}}`,
			v4len: 26, v4min: "10.1.0.64", v4max: "10.1.255.128", backend: "host-gw"},
		{name: "dual stack", json: `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}`,
			v4len: 24, v4min: "10.244.1.0", v4max: "10.244.254.0", v6len: 64, v6min: "fd00:10:244:1::", v6max: "fd00:10:244:fe::", backend: "vxlan"},
		{name: "ipv6 only", json: `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/120"}`,
			v6len: 122, v6min: "fd00::40", v6max: "fd00::80", backend: "vxlan"},
		{name: "ipv6 /124", json: `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/124","IPv6SubnetLen":126}`,
			v6len: 126, v6min: "fd00::4", v6max: "fd00::8", backend: "vxlan"},
		{name: "host bits masked", json: `{"Network":"10.244.7.0/16"}`, v4len: 24, v4min: "10.244.1.0", v4max: "10.244.254.0",
			backend: "vxlan", warningSubstring: "has host bits set"},
		{name: "unknown key warns", json: `{"Network":"10.244.0.0/16","Frobnicate":1}`, v4len: 24, v4min: "10.244.1.0",
			v4max: "10.244.254.0", backend: "vxlan", warningSubstring: `unknown key "Frobnicate"`},
		{name: "windows option warns", json: `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","MacPrefix":"0E-2A"}}`,
			v4len: 24, v4min: "10.244.1.0", v4max: "10.244.254.0", backend: "vxlan", warningSubstring: "MacPrefix is a Windows-only option"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, warnings, err := ParseNetConf([]byte(tc.json))
			if err != nil {
				t.Fatalf("ParseNetConf: %v", err)
			}
			checkFamily(t, "IPv4", c.IPv4, tc.v4len, tc.v4min, tc.v4max)
			checkFamily(t, "IPv6", c.IPv6, tc.v6len, tc.v6min, tc.v6max)
			if c.Backend.Type != tc.backend {
				t.Errorf("Backend.Type = %q, want %q", c.Backend.Type, tc.backend)
			}
			joined := strings.Join(warnings, "\n")
			if tc.warningSubstring == "" && len(warnings) > 0 {
				t.Errorf("unexpected warnings: %s", joined)
			}
			if !strings.Contains(joined, tc.warningSubstring) {
				t.Errorf("warnings %q do not mention %q", joined, tc.warningSubstring)
			}
		})
	}
}

func checkFamily(t *testing.T, name string, f Family, bits int, min, max string) {
	t.Helper()
	if bits == 0 {
		if f.Enabled {
			t.Errorf("%s enabled, want disabled", name)
		}
		return
	}
	if !f.Enabled || f.SubnetLen != bits || f.SubnetMin != netip.MustParseAddr(min) || f.SubnetMax != netip.MustParseAddr(max) {
		t.Errorf("%s = %+v, want /%d from %s to %s", name, f, bits, min, max)
	}
	if _, err := f.Pool(); err != nil {
		t.Errorf("%s pool: %v", name, err)
	}
}

func TestParseNetConfErrors(t *testing.T) {
	tests := []struct{ name, json, want string }{
		{"not json", `{"Network":`, "the file is not a JSON object"},
		{"array", `[1,2]`, "the file is not a JSON object"},
		{"trailing", `{"Network":"10.0.0.0/16"} {}`, "unexpected data after the JSON object"},
		{"no network", `{}`, "Network is missing (required when EnableIPv4 is true)"},
		{"network not string", `{"Network":16}`, "Network must be a string, not a number"},
		{"network not cidr", `{"Network":"10.0.0.0"}`, `Network "10.0.0.0" is not a CIDR such as 10.244.0.0/16`},
		{"network v6 in v4", `{"Network":"fd00::/48"}`, "Network fd00::/48 is not an IPv4 CIDR"},
		{"too small", `{"Network":"10.0.0.0/29"}`, "Network 10.0.0.0/29 is too small: the longest usable prefix is /28"},
		{"subnetlen 31", `{"Network":"10.0.0.0/16","SubnetLen":31}`, "SubnetLen 31 is longer than 30"},
		{"subnetlen short", `{"Network":"10.0.0.0/16","SubnetLen":17}`, "SubnetLen 17 is shorter than 18: Network 10.0.0.0/16 must hold at least 4 subnets"},
		{"subnetlen type", `{"Network":"10.0.0.0/16","SubnetLen":"24"}`, "SubnetLen must be a number, not a string"},
		{"subnetlen fraction", `{"Network":"10.0.0.0/16","SubnetLen":24.5}`, "SubnetLen 24.5 is not a whole number"},
		{"subnetlen negative", `{"Network":"10.0.0.0/16","SubnetLen":-1}`, "SubnetLen -1 is below 0"},
		{"min outside", `{"Network":"10.0.0.0/16","SubnetMin":"10.1.0.0"}`, "SubnetMin 10.1.0.0 is outside Network 10.0.0.0/16"},
		{"min unaligned", `{"Network":"10.0.0.0/16","SubnetMin":"10.0.1.5"}`, "SubnetMin 10.0.1.5 is not the start of a /24 subnet (did you mean 10.0.1.0?)"},
		{"max not addr", `{"Network":"10.0.0.0/16","SubnetMax":"ten"}`, `SubnetMax "ten" is not an IPv4 address`},
		{"min after max", `{"Network":"10.0.0.0/16","SubnetMin":"10.0.9.0","SubnetMax":"10.0.8.0"}`, "SubnetMin 10.0.9.0 is after SubnetMax 10.0.8.0"},
		{"dup key", `{"Network":"10.0.0.0/16","network":"10.1.0.0/16"}`, `Network is given twice, as "Network" and "network"`},
		{"no family", `{"EnableIPv4":false}`, "EnableIPv4 and EnableIPv6 are both false"},
		{"enable not bool", `{"Network":"10.0.0.0/16","EnableIPv6":"yes"}`, "EnableIPv6 must be true or false, not a string"},
		{"v6 missing", `{"Network":"10.0.0.0/16","EnableIPv6":true}`, "IPv6Network is missing (required when EnableIPv6 is true)"},
		{"v6 too small", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/125"}`, "IPv6Network fd00::/125 is too small: the longest usable prefix is /124"},
		{"v6 len long", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/64","IPv6SubnetLen":127}`, "IPv6SubnetLen 127 is longer than 126"},
		{"v6 len short", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/64","IPv6SubnetLen":65}`, "IPv6SubnetLen 65 is shorter than 66"},
		{"v6 min v4", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetMin":"10.0.0.0"}`, "IPv6SubnetMin 10.0.0.0 is not an IPv6 address"},
		{"nft not bool", `{"Network":"10.0.0.0/16","EnableNFTables":1}`, "EnableNFTables must be true or false, not a number"},
		{"backend not object", `{"Network":"10.0.0.0/16","Backend":"vxlan"}`, `Backend must be an object such as {"Type": "vxlan"}, not a string`},
		{"backend type number", `{"Network":"10.0.0.0/16","Backend":{"Type":1}}`, "Backend.Type must be a string, not a number"},
		{"backend type twice", `{"Network":"10.0.0.0/16","Backend":{"Type":"udp","type":"vxlan"}}`, "Backend.Type is given twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseNetConf([]byte(tc.json))
			if err == nil {
				t.Fatalf("ParseNetConf(%s) succeeded, want error containing %q", tc.json, tc.want)
			}
			if !errors.Is(err, ErrNetConf) {
				t.Errorf("error %v does not wrap ErrNetConf", err)
			}
			if !strings.HasPrefix(err.Error(), "net-conf.json: ") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

// The Backend section keeps its options, as written minus Type and the
// Windows-only ones, for the backend's package (sorted, so that equal
// sections compare equal).
func TestBackendSection(t *testing.T) {
	for _, tc := range []struct{ in, typ, opts string }{
		{``, DefaultBackend, ""},
		{`,"Backend":{}`, DefaultBackend, ""},
		{`,"Backend":{"Type":null}`, DefaultBackend, ""},
		{`,"Backend":{"type":"UDP"}`, "udp", ""},
		{`,"Backend":{"Type":"vxlan","VNI":4096,"MacPrefix":"0E-2A","Port":4789}`, "vxlan", `{"Port":4789,"VNI":4096}`},
		{`,"Backend":{"Port":4789, "VNI" : 4096,"Type":"vxlan"}`, "vxlan", `{"Port":4789,"VNI":4096}`},
	} {
		c, _, err := ParseNetConf([]byte(`{"Network":"10.0.0.0/16"` + tc.in + `}`))
		if err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		if c.Backend != (Backend{Type: tc.typ, Options: tc.opts}) {
			t.Errorf("%s: Backend = %+v, want type %q options %q", tc.in, c.Backend, tc.typ, tc.opts)
		}
	}
}

// The kube-flannel manifest's net-conf.json and a seed document's.
func TestRealWorldConfigs(t *testing.T) {
	for _, js := range []string{
		"{\n  \"Network\": \"10.244.0.0/16\",\n  \"EnableNFTables\": false,\n  \"Backend\": {\n    \"Type\": \"vxlan\"\n  }\n}\n",
		`{"Network": "172.16.0.0/16", "Backend": {"Type": "vxlan", "Directrouting": true}}`,
		`{"Network":"10.244.0.0/16","Backend":{"Type":"ipip","DirectRouting":true}}`,
		`{"Network":"10.244.0.0/16","IPv6Network":"2001:cafe:42::/56","EnableIPv6":true,"Backend":{"Type":"vxlan"}}`,
	} {
		if _, warnings, err := ParseNetConf([]byte(js)); err != nil || len(warnings) > 0 {
			t.Errorf("ParseNetConf(%s) = %v, warnings %v", js, err, warnings)
		}
	}
}
