package cni

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/weft-net/weft/internal/subnetfile"
)

func env4() subnetfile.Env {
	return subnetfile.Env{
		Networks: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
		Subnet:   netip.MustParsePrefix("10.244.1.1/24"),
		MTU:      1450,
		IPMasq:   true,
	}
}

func env46() subnetfile.Env {
	e := env4()
	e.IPv6Networks = []netip.Prefix{netip.MustParsePrefix("fd00:10:244::/56")}
	e.IPv6Subnet = netip.MustParsePrefix("fd00:10:244:1::1/64")
	return e
}

// compactJSON re-encodes s with sorted keys for comparison.
func compactJSON(t *testing.T, s string) string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("bad JSON %s: %v", s, err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestBuildDelegate(t *testing.T) {
	cases := []struct {
		name string
		conf string
		env  subnetfile.Env
		want string
	}{{
		name: "usual conflist entry",
		conf: `{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}}`,
		env:  env4(),
		want: `{"cniVersion":"1.0.0","name":"cbr0","type":"bridge","hairpinMode":true,"isDefaultGateway":true,
			"ipMasq":false,"mtu":1450,"isGateway":true,
			"ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.1.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}]}}`,
	}, {
		name: "dual stack, ipam base kept, user routes first",
		conf: `{"cniVersion":"1.1.0","name":"n","type":"flannel","ipam":{"dataDir":"/tmp/x","routes":[{"dst":"192.168.0.0/16"}],"ranges":[[{"subnet":"1.2.3.0/24"}]]}}`,
		env:  env46(),
		want: `{"cniVersion":"1.1.0","name":"n","type":"bridge","ipMasq":false,"mtu":1450,"isGateway":true,
			"ipam":{"type":"host-local","dataDir":"/tmp/x",
			"ranges":[[{"subnet":"10.244.1.0/24"}],[{"subnet":"fd00:10:244:1::/64"}]],
			"routes":[{"dst":"192.168.0.0/16"},{"dst":"10.244.0.0/16"},{"dst":"fd00:10:244::/56"}]}}`,
	}, {
		name: "user values win, other type gets no isGateway, runtimeConfig passes",
		conf: `{"name":"n","type":"weft","delegate":{"type":"ipvlan","master":"eth0","mtu":1400,"ipMasq":true},
			"ipam":{"type":"static"},"runtimeConfig":{"portMappings":[{"hostPort":80}]}}`,
		env: subnetfile.Env{
			IPv6Networks: []netip.Prefix{netip.MustParsePrefix("fd00::/48"), netip.MustParsePrefix("fd01::/48")},
			IPv6Subnet:   netip.MustParsePrefix("fd00:0:0:5::1/64"), MTU: 1500, IPMasq: false,
		},
		want: `{"name":"n","type":"ipvlan","master":"eth0","mtu":1400,"ipMasq":true,
			"runtimeConfig":{"portMappings":[{"hostPort":80}]},
			"ipam":{"type":"static","ranges":[[{"subnet":"fd00:0:0:5::/64"}]],"routes":[{"dst":"fd00::/48"},{"dst":"fd01::/48"}]}}`,
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conf, err := ParseNetConf([]byte(tc.conf))
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.Marshal(BuildDelegate(conf, tc.env))
			if err != nil {
				t.Fatal(err)
			}
			if g, w := compactJSON(t, string(got)), compactJSON(t, tc.want); g != w {
				t.Errorf("delegate\n got %s\nwant %s", g, w)
			}
		})
	}
}

func TestBuildDelegateDoesNotAliasConf(t *testing.T) {
	conf, err := ParseNetConf([]byte(`{"name":"n","delegate":{"x":1},"ipam":{"dataDir":"/d"}}`))
	if err != nil {
		t.Fatal(err)
	}
	d := BuildDelegate(conf, env4())
	d.Extra["y"] = json.RawMessage("2")
	d.IPAM.Extra["z"] = json.RawMessage("3")
	if len(conf.Delegate.Extra) != 1 || len(conf.IPAM.Extra) != 1 {
		t.Errorf("BuildDelegate changed its input: %v %v", conf.Delegate.Extra, conf.IPAM.Extra)
	}
}

func TestParseNetConfErrors(t *testing.T) {
	cases := []struct {
		conf string
		code uint
		msg  string
	}{
		{`{"name":"n",`, types.ErrDecodingFailure, "decode network configuration"},
		{`not json`, types.ErrDecodingFailure, "decode network configuration"},
		{`{"name":"n"} {}`, types.ErrDecodingFailure, "trailing data"},
		{`{"type":"flannel"}`, types.ErrInvalidNetworkConfig, `no "name"`},
		{`{"name":"n","delegate":{"name":"x"}}`, types.ErrInvalidNetworkConfig, `must not set "name"`},
		{`{"name":"n","delegate":{"Name":""}}`, types.ErrInvalidNetworkConfig, `must not set "name"`},
		{`{"name":"n","delegate":{"ipam":{"type":"dhcp"}}}`, types.ErrInvalidNetworkConfig, `must not set "ipam"`},
		{`{"name":"n","delegate":{"type":7}}`, types.ErrInvalidNetworkConfig, `"delegate.type"`},
		{`{"name":"n","delegate":{"type":"../../bin/sh"}}`, types.ErrInvalidNetworkConfig, "not a plugin name"},
		{`{"name":"n","delegate":{"mtu":"big"}}`, types.ErrInvalidNetworkConfig, `"delegate.mtu"`},
		{`{"name":"n","delegate":[]}`, types.ErrInvalidNetworkConfig, `"delegate" must be a JSON object`},
		{`{"name":"n","ipam":{"routes":[{"dst":"nope"}]}}`, types.ErrInvalidNetworkConfig, `"ipam.routes"`},
	}
	for _, tc := range cases {
		_, err := ParseNetConf([]byte(tc.conf))
		ce := ToCNIError(err)
		if ce == nil || ce.Code != tc.code || !strings.Contains(ce.Msg, tc.msg) {
			t.Errorf("ParseNetConf(%s) = %+v, want code %d and %q", tc.conf, ce, tc.code, tc.msg)
		}
	}
}

func TestParseNetConfDefaults(t *testing.T) {
	n, err := ParseNetConf([]byte(`{"name":"n","type":"flannel"}`))
	if err != nil {
		t.Fatal(err)
	}
	if n.SubnetFile != subnetfile.DefaultPath || n.DataDir != DefaultDataDir {
		t.Errorf("defaults: subnetFile %q dataDir %q", n.SubnetFile, n.DataDir)
	}
}

func TestToCNIError(t *testing.T) {
	delegateErr := &types.Error{Code: types.ErrTryAgainLater, Msg: "busy", Details: "d"}
	cases := []struct {
		err  error
		code uint
		msg  string
	}{
		{errors.New("boom"), types.ErrInternal, "boom"},
		{withCode(types.ErrIOFailure, errors.New("disk")), types.ErrIOFailure, "disk"},
		{withCode(types.ErrPluginNotAvailable, withCode(types.ErrTryAgainLater, errors.New("x"))), types.ErrPluginNotAvailable, "x"},
		{errors.Join(errors.New("a"), delegateErr), types.ErrTryAgainLater, "busy; d"},
	}
	for _, tc := range cases {
		got := ToCNIError(tc.err)
		if got.Code != tc.code || !strings.Contains(got.Msg, tc.msg) {
			t.Errorf("ToCNIError(%v) = %+v, want code %d", tc.err, got, tc.code)
		}
	}
	if ToCNIError(nil) != nil {
		t.Error("ToCNIError(nil) != nil")
	}
}
