// Package subnetfile reads and writes subnet.env, the file through which the
// daemon tells the CNI plugin (and anything else on the node) which subnet the
// node holds. The format is flannel's, key for key:
//
//	FLANNEL_NETWORK=10.244.0.0/16
//	FLANNEL_SUBNET=10.244.1.1/24
//	FLANNEL_IPV6_NETWORK=fd00:10:244::/56
//	FLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64
//	FLANNEL_MTU=1450
//	FLANNEL_IPMASQ=true
//
// The IPv6 lines are present only when IPv6 is enabled and the IPv4 lines only
// when IPv4 is. Readers accept comma-separated lists for the NETWORK keys.
package subnetfile

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/weft-net/weft/internal/atomicfile"
)

// Keys of subnet.env.
const (
	KeyNetwork     = "FLANNEL_NETWORK"
	KeySubnet      = "FLANNEL_SUBNET"
	KeyIPv6Network = "FLANNEL_IPV6_NETWORK"
	KeyIPv6Subnet  = "FLANNEL_IPV6_SUBNET"
	KeyMTU         = "FLANNEL_MTU"
	KeyIPMasq      = "FLANNEL_IPMASQ"
)

// DefaultPath is where flanneld writes the file.
const DefaultPath = "/run/flannel/subnet.env"

// ErrMissingKey is wrapped by Parse errors that report an absent key.
var ErrMissingKey = errors.New("missing key")

// Env is the content of subnet.env. Subnet and IPv6Subnet carry the node's
// first host address (the bridge's gateway address) with the subnet's length,
// e.g. 10.244.1.1/24; a zero Prefix means the family is off.
type Env struct {
	Networks     []netip.Prefix
	Subnet       netip.Prefix
	IPv6Networks []netip.Prefix
	IPv6Subnet   netip.Prefix
	MTU          int
	IPMasq       bool
}

// Marshal renders e in flannel's format.
func (e Env) Marshal() []byte {
	var b bytes.Buffer
	if e.Subnet.IsValid() {
		fmt.Fprintf(&b, "%s=%s\n", KeyNetwork, joinPrefixes(e.Networks))
		fmt.Fprintf(&b, "%s=%s\n", KeySubnet, e.Subnet)
	}
	if e.IPv6Subnet.IsValid() {
		fmt.Fprintf(&b, "%s=%s\n", KeyIPv6Network, joinPrefixes(e.IPv6Networks))
		fmt.Fprintf(&b, "%s=%s\n", KeyIPv6Subnet, e.IPv6Subnet)
	}
	fmt.Fprintf(&b, "%s=%d\n", KeyMTU, e.MTU)
	fmt.Fprintf(&b, "%s=%t\n", KeyIPMasq, e.IPMasq)
	return b.Bytes()
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// Write stores e at path atomically (see internal/atomicfile), mode 0644,
// creating the directory (0755) if missing.
func Write(path string, e Env) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create directory of subnet file: %w", err)
	}
	if err := atomicfile.Write(path, e.Marshal(), 0o644); err != nil {
		return fmt.Errorf("write subnet file: %w", err)
	}
	return nil
}

// Read loads and parses the file at path.
func Read(path string) (Env, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Env{}, fmt.Errorf("read subnet file: %w", err)
	}
	e, err := Parse(data)
	if err != nil {
		return Env{}, fmt.Errorf("subnet file %s: %w", path, err)
	}
	return e, nil
}

// Parse parses subnet.env content. Blank lines and lines starting with '#'
// are skipped, unknown keys are ignored (as flannel's readers do). A missing
// key is reported by name and wraps ErrMissingKey.
func Parse(data []byte) (Env, error) {
	kv := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return Env{}, fmt.Errorf("line %d: %q is not KEY=VALUE", n, truncate(line))
		}
		kv[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	if err := sc.Err(); err != nil {
		return Env{}, fmt.Errorf("scan: %w", err)
	}
	var e Env
	var err error
	_, has4 := kv[KeyNetwork]
	_, has4s := kv[KeySubnet]
	_, has6 := kv[KeyIPv6Network]
	_, has6s := kv[KeyIPv6Subnet]
	if has4 || has4s || !(has6 || has6s) {
		if e.Networks, e.Subnet, err = family(kv, KeyNetwork, KeySubnet, true); err != nil {
			return Env{}, err
		}
	}
	if has6 || has6s {
		if e.IPv6Networks, e.IPv6Subnet, err = family(kv, KeyIPv6Network, KeyIPv6Subnet, false); err != nil {
			return Env{}, err
		}
	}
	mtu, ok := kv[KeyMTU]
	if !ok {
		return Env{}, fmt.Errorf("%s: %w", KeyMTU, ErrMissingKey)
	}
	if e.MTU, err = strconv.Atoi(mtu); err != nil || e.MTU < 68 || e.MTU > 65535 {
		return Env{}, fmt.Errorf("%s: %q is not an MTU between 68 and 65535", KeyMTU, truncate(mtu))
	}
	masq, ok := kv[KeyIPMasq]
	if !ok {
		return Env{}, fmt.Errorf("%s: %w", KeyIPMasq, ErrMissingKey)
	}
	if e.IPMasq, err = strconv.ParseBool(masq); err != nil {
		return Env{}, fmt.Errorf("%s: %q is not true or false", KeyIPMasq, truncate(masq))
	}
	return e, nil
}

func family(kv map[string]string, netKey, subKey string, v4 bool) ([]netip.Prefix, netip.Prefix, error) {
	nets, ok := kv[netKey]
	if !ok {
		return nil, netip.Prefix{}, fmt.Errorf("%s: %w", netKey, ErrMissingKey)
	}
	sub, ok := kv[subKey]
	if !ok {
		return nil, netip.Prefix{}, fmt.Errorf("%s: %w", subKey, ErrMissingKey)
	}
	var networks []netip.Prefix
	for _, s := range strings.Split(nets, ",") {
		p, err := parsePrefix(s, v4)
		if err != nil {
			return nil, netip.Prefix{}, fmt.Errorf("%s: %w", netKey, err)
		}
		networks = append(networks, p.Masked())
	}
	subnet, err := parsePrefix(sub, v4)
	if err != nil {
		return nil, netip.Prefix{}, fmt.Errorf("%s: %w", subKey, err)
	}
	inside := false
	for _, n := range networks {
		if n.Bits() <= subnet.Bits() && n.Contains(subnet.Addr()) {
			inside = true
		}
	}
	if !inside {
		return nil, netip.Prefix{}, fmt.Errorf("%s: %s is not inside %s %s", subKey, subnet, netKey, nets)
	}
	return networks, subnet, nil
}

func parsePrefix(s string, v4 bool) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR", truncate(s))
	}
	if p.Addr().Is4() != v4 {
		want := "IPv6"
		if v4 {
			want = "IPv4"
		}
		return netip.Prefix{}, fmt.Errorf("%s is not an %s CIDR", p, want)
	}
	return p, nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
