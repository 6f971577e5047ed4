package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/weft-net/weft/internal/subnet"
)

// ErrNetConf is wrapped by every error Parse returns.
var ErrNetConf = errors.New("net-conf.json")

// NetConf is a parsed and validated net-conf.json.
type NetConf struct {
	// IPv4 and IPv6 are the two address families; Families returns the enabled ones.
	IPv4 Family
	IPv6 Family
	// EnableNFTables selects nftables instead of iptables for masquerade and forward rules.
	EnableNFTables bool
	// Backend is the data plane and its options.
	Backend Backend
}

// Family is the part of net-conf.json about one address family.
type Family struct {
	Enabled bool
	// Network is the cluster network (masked).
	Network netip.Prefix
	// SubnetLen is the prefix length of each node's subnet.
	SubnetLen int
	// SubnetMin and SubnetMax are the first and last subnets a node may lease.
	SubnetMin, SubnetMax netip.Addr
}

// Pool returns the subnets a node may lease in this family.
func (f Family) Pool() (subnet.Pool, error) {
	return subnet.NewPool(f.Network, f.SubnetLen, f.SubnetMin, f.SubnetMax)
}

// Families returns the enabled families, IPv4 first.
func (c *NetConf) Families() []Family {
	var out []Family
	for _, f := range []Family{c.IPv4, c.IPv6} {
		if f.Enabled {
			out = append(out, f)
		}
	}
	return out
}

// familyKeys names a family's keys in net-conf.json, so that one code path
// validates both families and still names the field the user wrote.
type familyKeys struct {
	v6                                 bool
	enable, network, len, min, max     string
	defaultEnable                      bool
	maxAddrBits, maxNetwork, maxSubnet int
}

func keysFor(v6 bool) familyKeys {
	if v6 {
		return familyKeys{v6: true, enable: "EnableIPv6", network: "IPv6Network", len: "IPv6SubnetLen",
			min: "IPv6SubnetMin", max: "IPv6SubnetMax", maxAddrBits: 128, maxNetwork: 124, maxSubnet: 126}
	}
	return familyKeys{enable: "EnableIPv4", network: "Network", len: "SubnetLen", min: "SubnetMin",
		max: "SubnetMax", defaultEnable: true, maxAddrBits: 32, maxNetwork: 28, maxSubnet: 30}
}

// topKeys are the keys net-conf.json may have at the top level.
func topKeys() []string {
	return []string{"Network", "IPv6Network", "EnableIPv4", "EnableIPv6", "EnableNFTables", "SubnetLen", "SubnetMin",
		"SubnetMax", "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax", "Backend"}
}

// ParseNetConf parses and validates net-conf.json. Keys match
// case-insensitively, as in flannel. The Backend section's options are the
// backend type's: ConfigureBackend validates them against the registry. It returns warnings (unknown keys and
// options, adjusted values) that the caller should log; every error wraps
// ErrNetConf and names the field and the rule it breaks.
func ParseNetConf(data []byte) (*NetConf, []string, error) {
	var warnings []string
	obj, err := readObject(data, "", topKeys(), &warnings)
	if err != nil {
		return nil, nil, err
	}
	c := &NetConf{}
	for _, v6 := range []bool{false, true} {
		f, err := parseFamily(obj, keysFor(v6), &warnings)
		if err != nil {
			return nil, nil, err
		}
		if v6 {
			c.IPv6 = f
		} else {
			c.IPv4 = f
		}
	}
	if !c.IPv4.Enabled && !c.IPv6.Enabled {
		return nil, nil, fmt.Errorf("%w: EnableIPv4 and EnableIPv6 are both false: enable at least one family", ErrNetConf)
	}
	if raw, ok := obj["EnableNFTables"]; ok && !isNull(raw) {
		if c.EnableNFTables, err = readBool(raw); err != nil {
			return nil, nil, fmt.Errorf("%w: EnableNFTables %w", ErrNetConf, err)
		}
	}
	if c.Backend, err = parseBackend(obj["Backend"], &warnings); err != nil {
		return nil, nil, err
	}
	return c, warnings, nil
}

// readObject decodes a JSON object and maps its keys, case-insensitively, to
// the canonical spelling in known. Unknown keys become warnings (where is the
// path shown in them, "" for the top level).
func readObject(data []byte, where string, known []string, warnings *[]string) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	var raw map[string]json.RawMessage
	if err := dec.Decode(&raw); err != nil || raw == nil {
		what := "is not a JSON object"
		if where == "" {
			what = "the file " + what
		} else {
			what = where + " " + what
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrNetConf, what, err)
		}
		return nil, fmt.Errorf("%w: %s", ErrNetConf, what)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: unexpected data after the JSON object", ErrNetConf)
	}
	canon := map[string]string{}
	for _, k := range known {
		canon[strings.ToLower(k)] = k
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := map[string]json.RawMessage{}
	spelled := map[string]string{}
	for _, k := range keys {
		c, ok := canon[strings.ToLower(k)]
		if !ok {
			*warnings = append(*warnings, fmt.Sprintf("net-conf.json: unknown key %q%s ignored", clip(k), in(where)))
			continue
		}
		if prev, dup := spelled[c]; dup {
			return nil, fmt.Errorf("%w: %s%s is given twice, as %q and %q", ErrNetConf, c, in(where), prev, k)
		}
		spelled[c] = k
		out[c] = raw[k]
	}
	return out, nil
}

func in(where string) string {
	if where == "" {
		return ""
	}
	return " in " + where
}

func parseFamily(obj map[string]json.RawMessage, k familyKeys, warnings *[]string) (Family, error) {
	f := Family{Enabled: k.defaultEnable}
	fail := func(field string, err error) (Family, error) {
		return Family{}, fmt.Errorf("%w: %s %w", ErrNetConf, field, err)
	}
	var err error
	if raw, ok := obj[k.enable]; ok && !isNull(raw) {
		if f.Enabled, err = readBool(raw); err != nil {
			return fail(k.enable, err)
		}
	}
	rawNet, hasNet := obj[k.network]
	hasNet = hasNet && !isNull(rawNet)
	if !f.Enabled {
		return Family{}, nil
	}
	if !hasNet {
		return Family{}, fmt.Errorf("%w: %s is missing (required when %s is true)", ErrNetConf, k.network, k.enable)
	}
	if f.Network, err = readPrefix(rawNet, k.v6); err != nil {
		return fail(k.network, err)
	}
	if m := f.Network.Masked(); m != f.Network {
		*warnings = append(*warnings, fmt.Sprintf("net-conf.json: %s %s has host bits set; using %s", k.network, f.Network, m))
		f.Network = m
	}
	bits := f.Network.Bits()
	if bits > k.maxNetwork {
		return Family{}, fmt.Errorf("%w: %s %s is too small: the longest usable prefix is /%d", ErrNetConf, k.network, f.Network, k.maxNetwork)
	}
	if raw, ok := obj[k.len]; ok && !isNull(raw) {
		if f.SubnetLen, err = readInt(raw, 0, int64(k.maxAddrBits)); err != nil {
			return fail(k.len, err)
		}
	}
	switch {
	case f.SubnetLen == 0:
		f.SubnetLen = defaultSubnetLen(bits, k.v6)
	case f.SubnetLen > k.maxSubnet:
		return Family{}, fmt.Errorf("%w: %s %d is longer than %d", ErrNetConf, k.len, f.SubnetLen, k.maxSubnet)
	case f.SubnetLen < bits+2:
		return Family{}, fmt.Errorf("%w: %s %d is shorter than %d: %s %s must hold at least 4 subnets", ErrNetConf, k.len, f.SubnetLen, bits+2, k.network, f.Network)
	}
	if err := subnetRange(obj, k, &f); err != nil {
		return Family{}, err
	}
	return f, nil
}

// subnetRange sets SubnetMin and SubnetMax (their defaults: the second subnet
// and the second-last one) and checks them.
func subnetRange(obj map[string]json.RawMessage, k familyKeys, f *Family) error {
	first, _ := subnet.Nth(f.Network, f.SubnetLen, 1)
	last, _ := subnet.LastSubnet(f.Network, f.SubnetLen, 1)
	f.SubnetMin, f.SubnetMax = first.Addr(), last.Addr()
	for _, b := range []struct {
		key string
		dst *netip.Addr
	}{{k.min, &f.SubnetMin}, {k.max, &f.SubnetMax}} {
		raw, ok := obj[b.key]
		if !ok || isNull(raw) {
			continue
		}
		a, err := readAddr(raw, k.v6)
		if err != nil {
			return fmt.Errorf("%w: %s %w", ErrNetConf, b.key, err)
		}
		if !f.Network.Contains(a) {
			return fmt.Errorf("%w: %s %s is outside %s %s", ErrNetConf, b.key, a, k.network, f.Network)
		}
		if !subnet.IsAligned(a, f.SubnetLen) {
			p, _ := a.Prefix(f.SubnetLen)
			return fmt.Errorf("%w: %s %s is not the start of a /%d subnet (did you mean %s?)", ErrNetConf, b.key, a, f.SubnetLen, p.Addr())
		}
		*b.dst = a
	}
	if f.SubnetMin.Compare(f.SubnetMax) > 0 {
		return fmt.Errorf("%w: %s %s is after %s %s", ErrNetConf, k.min, f.SubnetMin, k.max, f.SubnetMax)
	}
	return nil
}

// defaultSubnetLen is flannel's rule: IPv4 networks up to /22 get /24
// subnets, longer ones prefix+2; IPv6 networks up to /62 get /64, longer ones
// prefix+2.
func defaultSubnetLen(networkBits int, v6 bool) int {
	limit, def := 22, 24
	if v6 {
		limit, def = 62, 64
	}
	if networkBits <= limit {
		return def
	}
	return networkBits + 2
}
