//go:build linux

package backend

import (
	"context"
	"errors"
	"flag"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/kernel"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/reconcile"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }

// PeerCheck refuses another type's lease and the node's own (by key or by
// either public address), and nothing else.
func TestPeerCheck(t *testing.T) {
	own := lease.Lease{Subnet: pfx("10.244.1.0/24"), IPv6Subnet: pfx("fd00:10:244:1::/64"),
		Attrs: lease.Attrs{PublicIP: ip("192.168.1.1"), PublicIPv6: ip("fd00::1"), BackendType: "vxlan"}}
	peer := func(change func(*lease.Lease)) lease.Lease {
		l := lease.Lease{Subnet: pfx("10.244.2.0/24"), IPv6Subnet: pfx("fd00:10:244:2::/64"),
			Attrs: lease.Attrs{PublicIP: ip("192.168.1.2"), PublicIPv6: ip("fd00::2"), BackendType: "vxlan"}}
		if change != nil {
			change(&l)
		}
		return l
	}
	v4only := own
	v4only.IPv6Subnet, v4only.Attrs.PublicIPv6 = netip.Prefix{}, netip.Addr{}
	for _, tc := range []struct {
		name string
		own  lease.Lease
		peer lease.Lease
		is   error // nil: accepted
		msg  string
	}{
		{"peer", own, peer(nil), nil, ""},
		{"other type", own, peer(func(l *lease.Lease) { l.Attrs.BackendType = "host-gw" }), ErrOtherType,
			`its BackendType "host-gw" is not this node's "vxlan"`},
		{"no type", own, peer(func(l *lease.Lease) { l.Attrs.BackendType = "" }), ErrOtherType,
			`its BackendType "" is not this node's "vxlan"`},
		{"own key", own, peer(func(l *lease.Lease) { l.Subnet, l.IPv6Subnet = own.Subnet, own.IPv6Subnet }), ErrSelf,
			"it is this node's own lease"},
		{"own public IPv4", own, peer(func(l *lease.Lease) { l.Attrs.PublicIP = own.Attrs.PublicIP }), ErrSelf,
			"it carries this node's own public address"},
		{"own public IPv6", own, peer(func(l *lease.Lease) { l.Attrs.PublicIPv6 = own.Attrs.PublicIPv6 }), ErrSelf,
			"it carries this node's own public address"},
		// Neither has an IPv6 address: two zero Addrs are not the same node.
		{"both without IPv6", v4only, peer(func(l *lease.Lease) { l.IPv6Subnet, l.Attrs.PublicIPv6 = netip.Prefix{}, netip.Addr{} }), nil, ""},
	} {
		err := PeerCheck(tc.own, tc.peer, "vxlan")
		if tc.is == nil {
			if err != nil {
				t.Errorf("%s: %v, want accepted", tc.name, err)
			}
			continue
		}
		if !errors.Is(err, tc.is) || err.Error() != tc.msg {
			t.Errorf("%s: %q, want %q wrapping %v", tc.name, err, tc.msg, tc.is)
		}
		if other := map[error]error{ErrSelf: ErrOtherType, ErrOtherType: ErrSelf}[tc.is]; errors.Is(err, other) {
			t.Errorf("%s: %v also wraps %v", tc.name, err, other)
		}
	}
}

// A peer is directly connected when its address is on one of the
// interface's subnets; a host address (/32, /128) makes no subnet.
func TestDirectlyConnected(t *testing.T) {
	e := External{Name: "eth0", Addrs: []netip.Prefix{pfx("192.168.1.1/24"), pfx("fd00::1/64"), pfx("10.0.0.5/32"), pfx("fd01::5/128")}}
	for a, want := range map[string]bool{
		"192.168.1.1":   true,
		"192.168.1.200": true,
		"192.168.2.1":   false,
		"fd00::99":      true,
		"fd00:0:0:1::1": false,
		"10.0.0.5":      false,
		"10.0.0.6":      false,
		"fd01::5":       false,
	} {
		if got := e.DirectlyConnected(ip(a)); got != want {
			t.Errorf("DirectlyConnected(%s) = %v, want %v", a, got, want)
		}
	}
	if (External{}).DirectlyConnected(ip("192.168.1.1")) {
		t.Error("an interface without addresses connects a peer")
	}
}

// stub is a Backend that does nothing, for the registry's factories.
type stub struct{ path Path }

func (stub) Attrs(context.Context) (lease.Attrs, error) { return lease.Attrs{}, nil }
func (stub) Ensure(context.Context, lease.Lease) error  { return nil }
func (stub) Peer(lease.Lease, lease.Lease) (reconcile.Objects, error) {
	return reconcile.Objects{}, nil
}
func (stub) Links() []int             { return nil }
func (stub) Devices() []kernel.Device { return nil }
func (stub) MTU() int                 { return 1500 }

// testRegistry has three small types: one with options and node settings,
// one without either, one whose factory fails.
func testRegistry(validated *[]string) Registry {
	var speed int
	return Registry{
		{Name: "fast",
			Validate: func(c *config.NetConf) ([]string, error) {
				*validated = append(*validated, c.Backend.Type)
				w, err := c.Backend.ReadOptions([]config.Option{config.IntOption("Speed", &speed, 1, 10)})
				if err != nil {
					return nil, err
				}
				return append(w, "fast is experimental"), nil
			},
			New: func(d Deps) (Backend, error) {
				return stub{path: SettingsOf(d, func() *fastSettings { return &fastSettings{Path: PathAuto} }).Path}, nil
			},
			Settings: func() config.FlagAdder { return &fastSettings{Path: PathAuto} }},
		{Name: "plain", New: func(Deps) (Backend, error) { return stub{}, nil }},
		{Name: "broken", New: func(Deps) (Backend, error) { return nil, errors.New("no hardware") }},
	}
}

// fastSettings are the fast type's node settings.
type fastSettings struct{ Path Path }

func (s *fastSettings) AddFlags(fs *flag.FlagSet) { fs.Var(&s.Path, "fast-path", "data path") }

func netConf(t *testing.T, backend string) *config.NetConf {
	t.Helper()
	c, _, err := config.ParseNetConf([]byte(`{"Network":"10.244.0.0/16","Backend":` + backend + `}`))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRegistryNamesLookup(t *testing.T) {
	var validated []string
	r := testRegistry(&validated)
	if got := r.Names(); !slices.Equal(got, []string{"fast", "plain", "broken"}) {
		t.Errorf("Names() = %v", got)
	}
	if ty, ok := r.Lookup("plain"); !ok || ty.Name != "plain" {
		t.Errorf("Lookup(plain) = %+v, %v", ty, ok)
	}
	if ty, ok := r.Lookup("Plain"); ok || ty.Name != "" {
		t.Errorf("Lookup(Plain) = %+v, %v; want nothing (names are exact)", ty, ok)
	}
	if len(Registry(nil).Names()) != 0 || len(Registry(nil).Settings()) != 0 {
		t.Error("an empty registry has names or settings")
	}
}

// Validate runs the type's Validate; a type without one takes no options
// (each given is warned about); an unknown type is not ok, without error.
func TestRegistryValidate(t *testing.T) {
	var validated []string
	r := testRegistry(&validated)
	for _, tc := range []struct {
		name, backend string
		ok            bool
		warn, err     string // substrings; "" for none
	}{
		{"options", `{"Type":"fast","Speed":3}`, true, "fast is experimental", ""},
		{"bad option", `{"Type":"fast","Speed":30}`, true, "", "Backend.Speed 30 is above 10"},
		{"no options", `{"Type":"plain"}`, true, "", ""},
		{"unknown option", `{"Type":"plain","Speed":3}`, true, "Speed", ""},
		{"unknown type", `{"Type":"slow"}`, false, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			validated = nil
			w, ok, err := r.Validate(netConf(t, tc.backend))
			if ok != tc.ok {
				t.Errorf("ok %v, want %v", ok, tc.ok)
			}
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("error %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, config.ErrNetConf)):
				t.Errorf("error %v, want one wrapping ErrNetConf with %q", err, tc.err)
			}
			joined := strings.Join(w, "\n")
			if (tc.warn == "") != (len(w) == 0) || !strings.Contains(joined, tc.warn) {
				t.Errorf("warnings %q, want %q", w, tc.warn)
			}
			if wantCalled := strings.Contains(tc.backend, `"fast"`); (len(validated) == 1) != wantCalled {
				t.Errorf("fast's Validate ran %d times", len(validated))
			}
		})
	}
}

// New validates, then builds with the type's factory, naming the type in
// a failure.
func TestRegistryNew(t *testing.T) {
	var validated []string
	r := testRegistry(&validated)
	if b, err := r.New(Deps{Net: netConf(t, `{"Type":"fast"}`)}); err != nil || b == nil {
		t.Errorf("New(fast) = %v, %v", b, err)
	}
	if _, err := r.New(Deps{Net: netConf(t, `{"Type":"broken"}`)}); err == nil || err.Error() != "start broken backend: no hardware" {
		t.Errorf("New(broken) = %v", err)
	}
	if _, err := r.New(Deps{Net: netConf(t, `{"Type":"slow"}`)}); !errors.Is(err, config.ErrNetConf) ||
		!strings.Contains(err.Error(), `Backend.Type "slow" is unknown; use one of fast, plain, broken`) {
		t.Errorf("New(slow) = %v", err)
	}
	if _, err := r.New(Deps{Net: netConf(t, `{"Type":"fast","Speed":0}`)}); !errors.Is(err, config.ErrNetConf) {
		t.Errorf("New with a bad option = %v", err)
	}
}

// Settings gives each type with node settings their defaults; New hands a
// type the settings weftd parsed (Options.Backends), or lets it fall back
// to its defaults.
func TestRegistrySettings(t *testing.T) {
	var validated []string
	r := testRegistry(&validated)
	set := r.Settings()
	if len(set) != 1 || set["fast"] == nil {
		t.Fatalf("Settings() = %v, want fast's alone", set)
	}
	o, err := config.ParseOptions([]string{"--fast-path=userspace"}, func(string) (string, bool) { return "", false }, set)
	if err != nil {
		t.Fatal(err)
	}
	nc := netConf(t, `{"Type":"fast"}`)
	for _, tc := range []struct {
		name string
		d    Deps
		want Path
	}{
		{"parsed", Deps{Net: nc, Options: &o}, PathUserspace},
		{"no options", Deps{Net: nc}, PathAuto},
		{"options without the type's", Deps{Net: nc, Options: &config.Options{}}, PathAuto},
	} {
		b, err := r.New(tc.d)
		if err != nil || b.(stub).path != tc.want {
			t.Errorf("%s: New = %+v, %v; want path %s", tc.name, b, err, tc.want)
		}
	}
	if _, err := config.ParseOptions([]string{"--fast-path=fastest"}, func(string) (string, bool) { return "", false }, r.Settings()); err == nil ||
		!strings.Contains(err.Error(), `--fast-path: "fastest": want auto, kernel or userspace`) {
		t.Errorf("a bad path = %v", err)
	}
}
