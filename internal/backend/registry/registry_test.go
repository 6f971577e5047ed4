//go:build linux

package registry_test

import (
	"errors"
	"flag"
	"slices"
	"strings"
	"testing"

	"github.com/weft-net/weft/internal/backend/ipip"
	"github.com/weft-net/weft/internal/backend/registry"
	"github.com/weft-net/weft/internal/backend/udp"
	"github.com/weft-net/weft/internal/backend/vxlan"
	"github.com/weft-net/weft/internal/config"
)

// configure is what weftd does with the store's net-conf.json: parse it,
// then check its Backend section against this build's types.
func configure(text string) (*config.NetConf, []string, error) {
	c, warnings, err := config.ParseNetConf([]byte(text))
	if err != nil {
		return nil, nil, err
	}
	w, err := c.ConfigureBackend(registry.Default())
	return c, append(warnings, w...), err
}

// The registry is the one list of backend types, in the order messages
// show them.
func TestNames(t *testing.T) {
	if got := strings.Join(registry.Default().Names(), " "); got != "vxlan host-gw udp ipip wireguard" {
		t.Errorf("Names() = %s", got)
	}
	// Each type's node settings are flags named after it, beside weftd's
	// own (AddFlags panics when a name is registered twice).
	var flags []string
	for name, s := range registry.Default().Settings() {
		fs := flag.NewFlagSet(name, flag.ContinueOnError)
		s.AddFlags(fs)
		fs.VisitAll(func(f *flag.Flag) {
			if !strings.HasPrefix(f.Name, name+"-") {
				t.Errorf("type %s has flag --%s, not named after it", name, f.Name)
			}
			flags = append(flags, f.Name)
		})
	}
	slices.Sort(flags)
	if got := strings.Join(flags, " "); got != "ipip-path ipip-tuning udp-tuning wireguard-path wireguard-socket-dir" {
		t.Errorf("the types' flags = %s", got)
	}
	o := config.Defaults()
	o.Backends = registry.Default().Settings()
	o.AddFlags(flag.NewFlagSet("weftd", flag.ContinueOnError))
}

// Every error keeps net-conf.json's wording: the option, the rule, the
// value (never a secret).
func TestConfigureErrors(t *testing.T) {
	tests := []struct{ name, json, want string }{
		{"backend unknown", `{"Network":"10.0.0.0/16","Backend":{"Type":"carrier-pigeon"}}`, `Backend.Type "carrier-pigeon" is unknown; use one of vxlan, host-gw, udp, ipip, wireguard`},
		{"backend cloud", `{"Network":"10.0.0.0/16","Backend":{"Type":"aws-vpc"}}`, `Backend.Type "aws-vpc" (a cloud-provider route backend) is not supported by weft; use one of vxlan`},
		{"ipsec", `{"Network":"10.0.0.0/16","Backend":{"Type":"IPsec"}}`, `Backend.Type "ipsec" (flannel's strongSwan backend (use wireguard)) is not supported by weft; use one of vxlan, host-gw, udp, ipip, wireguard`},
		{"wireguard psk", `{"Network":"10.0.0.0/16","Backend":{"Type":"wireguard","PSK":"c2VjcmV0"}}`, "Backend.PSK is not a base64-encoded 32-byte key"},
		{"wireguard mode", `{"Network":"10.0.0.0/16","Backend":{"Type":"wireguard","Mode":"mesh"}}`, `Backend.Mode "mesh" is not one of separate, auto, ipv4, ipv6`},
		{"wireguard port", `{"Network":"10.0.0.0/16","Backend":{"Type":"wireguard","ListenPort":70000}}`, "Backend.ListenPort 70000 is above 65535"},
		{"wireguard keepalive", `{"Network":"10.0.0.0/16","Backend":{"Type":"wireguard","PersistentKeepaliveInterval":"25s"}}`, "Backend.PersistentKeepaliveInterval must be a number, not a string"},
		{"wireguard mtu", `{"Network":"10.0.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56","Backend":{"Type":"wireguard","MTU":1300}}`, "Backend.MTU 1220 is below the minimum 1280 (Backend.MTU 1300 less WireGuard's 80 bytes)"},
		{"wireguard same ports", `{"Network":"10.0.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56","Backend":{"Type":"wireguard","ListenPort":5000,"ListenPortV6":5000}}`, "Backend.ListenPort and ListenPortV6 are both 5000"},
		{"vni string", `{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","VNI":"one"}}`, "Backend.VNI must be a number, not a string"},
		{"vni big", `{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}`, "Backend.VNI 16777216 is above 16777215"},
		{"vxlan port big", `{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","Port":65536}}`, "Backend.Port 65536 is above 65535"},
		{"vxlan gbp type", `{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","GBP":"true"}}`, "Backend.GBP must be true or false, not a string"},
		{"vxlan mtu small", `{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","MTU":60}}`, "Backend.MTU 60 is below the minimum 68"},
		{"vxlan mtu v6", `{"Network":"10.0.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56","Backend":{"Type":"vxlan","MTU":1200}}`, "Backend.MTU 1200 is below the minimum 1280"},
		{"udp port zero", `{"Network":"10.0.0.0/16","Backend":{"Type":"udp","Port":0}}`, "Backend.Port 0 is below 1"},
		{"ipip dr type", `{"Network":"10.0.0.0/16","Backend":{"Type":"ipip","DirectRouting":1}}`, "Backend.DirectRouting must be true or false, not a number"},
		{"ipip v6 only", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/48","Backend":{"Type":"ipip"}}`, "ipip carries IPv4 only"},
		{"ipip dual stack", `{"Network":"10.0.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48","Backend":{"Type":"ipip"}}`, "Backend.Type ipip carries IPv4 only (as flannel's), but EnableIPv6 is true"},
		{"dup option", `{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","VNI":1,"vni":2}}`, `VNI in Backend (vxlan) is given twice`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := configure(tc.json)
			if err == nil {
				t.Fatalf("%s accepted, want an error containing %q", tc.json, tc.want)
			}
			if !errors.Is(err, config.ErrNetConf) {
				t.Errorf("error %v does not wrap ErrNetConf", err)
			}
			if !strings.HasPrefix(err.Error(), "net-conf.json: ") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestConfigureWarnsUnknownOptions(t *testing.T) {
	for _, js := range []string{
		`{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Turbo":true}}`,
		`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw","Turbo":true}}`,
	} {
		_, warnings, err := configure(js)
		if err != nil || len(warnings) != 1 || !strings.Contains(warnings[0], `unknown key "Turbo" in Backend (`) {
			t.Errorf("%s: err %v, warnings %q; want one about Turbo", js, err, warnings)
		}
	}
}

// Each backend's package owns its options and their defaults.
func TestBackendOptions(t *testing.T) {
	c, _, err := configure(`{"Network":"10.0.0.0/16"}`)
	if err != nil {
		t.Fatal(err)
	}
	if o, _, _ := vxlan.ParseOptions(c); o != (vxlan.Options{VNI: 1, Port: 8472}) {
		t.Errorf("missing Backend: vxlan options %+v, want VNI 1 port 8472", o)
	}
	c, _, err = configure(`{"Network":"10.0.0.0/16","Backend":{"type":"VXLAN","vni":4096,"Port":4789,"GBP":true,"Learning":true,"DirectRouting":true,"MTU":1400}}`)
	if err != nil {
		t.Fatal(err)
	}
	if o, _, _ := vxlan.ParseOptions(c); o != (vxlan.Options{VNI: 4096, Port: 4789, GBP: true, Learning: true, DirectRouting: true, MTU: 1400}) {
		t.Errorf("vxlan options = %+v", o)
	}
	c, _, err = configure(`{"Network":"10.0.0.0/16","Backend":{"Type":"udp"}}`)
	if err != nil {
		t.Fatal(err)
	}
	if o, _, _ := udp.ParseNetConfOptions(c); o.Port != 8285 {
		t.Errorf("udp port = %d, want 8285", o.Port)
	}
	c, _, err = configure(`{"Network":"10.0.0.0/16","Backend":{"Type":"ipip","directrouting":true}}`)
	if err != nil {
		t.Fatal(err)
	}
	if o, _, _ := ipip.ParseOptions(c); !o.DirectRouting {
		t.Errorf("ipip DirectRouting not read")
	}
}

// The kube-flannel manifest's net-conf.json and the seed documents'.
func TestRealWorldConfigs(t *testing.T) {
	for _, js := range []string{
		"{\n  \"Network\": \"10.244.0.0/16\",\n  \"EnableNFTables\": false,\n  \"Backend\": {\n    \"Type\": \"vxlan\"\n  }\n}\n",
		`{"Network": "172.16.0.0/16", "Backend": {"Type": "vxlan", "Directrouting": true}}`,
		`{"Network":"10.244.0.0/16","IPv6Network":"2001:cafe:42::/56","EnableIPv6":true,"Backend":{"Type":"vxlan"}}`,
		`{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Port":8285}}`,
		`{"Network":"10.244.0.0/16","Backend":{"Type":"ipip","DirectRouting":true}}`,
	} {
		if _, warnings, err := configure(js); err != nil || len(warnings) > 0 {
			t.Errorf("%s: %v, warnings %v", js, err, warnings)
		}
	}
}

// Whatever net-conf.json holds, configuring it either succeeds with a type of
// this build or fails with ErrNetConf; nothing panics.
func FuzzConfigure(f *testing.F) {
	for _, s := range []string{
		`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":1,"Port":4789,"DirectRouting":true}}`,
		`{"Network":"10.0.0.0/8","Backend":{"Type":"udp","Port":8285}}`,
		`{"Network":"10.0.0.0/8","Backend":{"Type":"ipip","DirectRouting":false}}`,
		`{"Network":"10.0.0.0/8","Backend":{"Type":"host-gw","x":[1,{}]}}`,
		`{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan","VNI":"one","MacPrefix":"0E-2A"}}`,
		`{"Network":"10.0.0.0/8","Backend":{"Type":"wireguard","PSK":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, _, err := configure(s)
		if err != nil {
			if !errors.Is(err, config.ErrNetConf) {
				t.Fatalf("error %v does not wrap ErrNetConf", err)
			}
			return
		}
		if !slices.Contains(registry.Default().Names(), c.Backend.Type) {
			t.Fatalf("accepted backend %q, not of this build", c.Backend.Type)
		}
	})
}
