package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/weft-net/weft/internal/subnetfile"
)

// DefaultDelegateType and DefaultIPAMType are flannel's defaults.
const (
	DefaultDelegateType = "bridge"
	DefaultIPAMType     = "host-local"
)

// Delegate is the configuration handed to the delegate plugin. The keys weft
// reads or sets are typed fields; any other key of the user's "delegate"
// section (bridge, hairpinMode, isDefaultGateway, ...) is kept verbatim in
// Extra. Keys are matched case-insensitively, as encoding/json in the
// delegate will match them.
type Delegate struct {
	CNIVersion    string
	Name          string
	Type          string
	IPMasq        *bool
	MTU           *int
	IsGateway     *bool
	IPAM          *IPAM
	RuntimeConfig json.RawMessage
	Extra         map[string]json.RawMessage

	nameSet bool // the user's section had a "name" key, even an empty one
}

// IPAM is the delegate's ipam section: Type, Ranges and Routes are typed,
// anything else (dataDir, ...) is kept verbatim in Extra.
type IPAM struct {
	Type   string
	Ranges [][]Range
	Routes []types.Route
	Extra  map[string]json.RawMessage
}

// Range is one host-local range.
type Range struct {
	Subnet netip.Prefix `json:"subnet"`
}

// configError marks a well-formed but unusable configuration value; it maps
// to ErrInvalidNetworkConfig rather than ErrDecodingFailure.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// field decodes raw into dst, naming the key on failure.
func field(key string, raw json.RawMessage, dst any) error {
	if err := json.Unmarshal(raw, dst); err != nil {
		return &configError{fmt.Errorf("%q: %w", key, err)}
	}
	return nil
}

// UnmarshalJSON splits the object into typed fields and Extra.
func (d *Delegate) UnmarshalJSON(data []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return &configError{fmt.Errorf("\"delegate\" must be a JSON object: %w", err)}
	}
	*d = Delegate{Extra: map[string]json.RawMessage{}}
	for k, v := range m {
		var err error
		switch strings.ToLower(k) {
		case "cniversion":
			err = field("delegate.cniVersion", v, &d.CNIVersion)
		case "name":
			d.nameSet = true
			err = field("delegate.name", v, &d.Name)
		case "type":
			err = field("delegate.type", v, &d.Type)
		case "ipmasq":
			err = field("delegate.ipMasq", v, &d.IPMasq)
		case "mtu":
			err = field("delegate.mtu", v, &d.MTU)
		case "isgateway":
			err = field("delegate.isGateway", v, &d.IsGateway)
		case "ipam":
			d.IPAM = &IPAM{}
			err = field("delegate.ipam", v, d.IPAM)
		case "runtimeconfig":
			d.RuntimeConfig = v
		default:
			d.Extra[k] = v
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// MarshalJSON renders the typed fields over Extra.
func (d Delegate) MarshalJSON() ([]byte, error) {
	m := maps.Clone(d.Extra)
	if m == nil {
		m = map[string]json.RawMessage{}
	}
	set := func(key string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode delegate %s: %w", key, err)
		}
		m[key] = b
		return nil
	}
	var errs []error
	if d.CNIVersion != "" {
		errs = append(errs, set("cniVersion", d.CNIVersion))
	}
	errs = append(errs, set("name", d.Name), set("type", d.Type))
	if d.IPMasq != nil {
		errs = append(errs, set("ipMasq", *d.IPMasq))
	}
	if d.MTU != nil {
		errs = append(errs, set("mtu", *d.MTU))
	}
	if d.IsGateway != nil {
		errs = append(errs, set("isGateway", *d.IsGateway))
	}
	if d.IPAM != nil {
		errs = append(errs, set("ipam", d.IPAM))
	}
	if len(d.RuntimeConfig) > 0 {
		m["runtimeConfig"] = d.RuntimeConfig
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return json.Marshal(m)
}

// UnmarshalJSON splits the object into typed fields and Extra. Ranges given
// by the user are dropped: they are always replaced by subnet.env's subnets.
func (p *IPAM) UnmarshalJSON(data []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return &configError{fmt.Errorf("\"ipam\" must be a JSON object: %w", err)}
	}
	*p = IPAM{Extra: map[string]json.RawMessage{}}
	for k, v := range m {
		var err error
		switch strings.ToLower(k) {
		case "type":
			err = field("ipam.type", v, &p.Type)
		case "routes":
			err = field("ipam.routes", v, &p.Routes)
		case "ranges":
			// replaced by subnet.env's subnets, as flannel does
		default:
			p.Extra[k] = v
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// MarshalJSON renders the typed fields over Extra.
func (p IPAM) MarshalJSON() ([]byte, error) {
	m := maps.Clone(p.Extra)
	if m == nil {
		m = map[string]json.RawMessage{}
	}
	set := func(key string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode ipam %s: %w", key, err)
		}
		m[key] = b
		return nil
	}
	errs := []error{set("type", p.Type)}
	if p.Ranges != nil {
		errs = append(errs, set("ranges", p.Ranges))
	}
	if p.Routes != nil {
		errs = append(errs, set("routes", p.Routes))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return json.Marshal(m)
}

// validateInput rejects the keys weft owns in the user's delegate section.
func (d *Delegate) validateInput() error {
	if d.nameSet {
		return errors.New("\"delegate\" must not set \"name\": weft sets it to the network's name")
	}
	if d.IPAM != nil {
		return errors.New("\"delegate\" must not set \"ipam\": put IPAM settings in the top-level \"ipam\" section, weft adds the subnet and routes to it")
	}
	return validPluginName("delegate.type", d.Type)
}

// validPluginName checks that a plugin type names a file in CNI_PATH.
func validPluginName(what, name string) error {
	if strings.ContainsAny(name, "/\\\x00") || name == "." || name == ".." {
		return fmt.Errorf("%s %q is not a plugin name", what, name)
	}
	return nil
}

// BuildDelegate returns the delegate configuration for conf on a node whose
// subnet.env is env, following flannel's plugin: type bridge unless set,
// name and cniVersion from conf, ipMasq = !FLANNEL_IPMASQ and mtu =
// FLANNEL_MTU unless set, isGateway true for bridge unless set, and an ipam
// section based on conf.IPAM with type host-local unless set, one range per
// address family and a route to every FLANNEL_NETWORK and
// FLANNEL_IPV6_NETWORK appended to the user's routes.
func BuildDelegate(conf *NetConf, env subnetfile.Env) *Delegate {
	d := &Delegate{}
	if conf.Delegate != nil {
		*d = *conf.Delegate
		d.Extra = maps.Clone(conf.Delegate.Extra)
	}
	d.Name = conf.Name
	if conf.CNIVersion != "" {
		d.CNIVersion = conf.CNIVersion
	}
	if d.Type == "" {
		d.Type = DefaultDelegateType
	}
	if d.IPMasq == nil {
		d.IPMasq = new(!env.IPMasq)
	}
	if d.MTU == nil {
		d.MTU = new(env.MTU)
	}
	if d.Type == DefaultDelegateType && d.IsGateway == nil {
		d.IsGateway = new(true)
	}
	if len(conf.RuntimeConfig) > 0 {
		d.RuntimeConfig = conf.RuntimeConfig
	}
	d.IPAM = buildIPAM(conf.IPAM, env)
	return d
}

func buildIPAM(base *IPAM, env subnetfile.Env) *IPAM {
	ipam := &IPAM{}
	if base != nil {
		ipam.Type = base.Type
		ipam.Extra = maps.Clone(base.Extra)
		ipam.Routes = append(ipam.Routes, base.Routes...)
	}
	if ipam.Type == "" {
		ipam.Type = DefaultIPAMType
	}
	families := []struct {
		subnet   netip.Prefix
		networks []netip.Prefix
	}{
		{env.Subnet, env.Networks},
		{env.IPv6Subnet, env.IPv6Networks},
	}
	ipam.Ranges = [][]Range{}
	if ipam.Routes == nil {
		ipam.Routes = []types.Route{}
	}
	for _, f := range families {
		if !f.subnet.IsValid() {
			continue
		}
		ipam.Ranges = append(ipam.Ranges, []Range{{Subnet: f.subnet.Masked()}})
		for _, n := range f.networks {
			ipam.Routes = append(ipam.Routes, types.Route{Dst: ipNet(n)})
		}
	}
	return ipam
}

func ipNet(p netip.Prefix) net.IPNet {
	p = p.Masked()
	return net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
