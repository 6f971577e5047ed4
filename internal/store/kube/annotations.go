package kube

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/subnet"
)

// Backend names whose annotations flannel writes by special rules.
const (
	typeVXLAN     = "vxlan"
	typeWireGuard = "wireguard"
	typeHostGW    = "host-gw"
	typeExtension = "extension"
)

// errNotManaged means the Node does not carry kube-subnet-manager: "true":
// it is not a flannel or weft node, and not a peer. It is not logged.
var errNotManaged = errors.New("not managed by a kube subnet manager")

// keys are the names of the Node annotations under one prefix.
type keys struct {
	managed, backendType, backendData, backendV6Data             string
	publicIP, publicIPv6, publicIPOverwrite, publicIPv6Overwrite string
	// nodePublicIP and nodePublicIPv6 are read from the own Node only, at
	// start (publicaddrs.go); strip does not keep them.
	nodePublicIP, nodePublicIPv6 string
}

// newKeys builds the names as flannel does: "<prefix>/<name>" for a prefix
// without a slash; a prefix that has one ("example.com/net") gets a "-"
// before the name unless it already ends with "/" or "-".
func newKeys(prefix string) keys {
	if !strings.Contains(prefix, "/") {
		prefix += "/"
	}
	if !strings.HasSuffix(prefix, "/") && !strings.HasSuffix(prefix, "-") {
		prefix += "-"
	}
	return keys{
		managed:             prefix + "kube-subnet-manager",
		backendType:         prefix + "backend-type",
		backendData:         prefix + "backend-data",
		backendV6Data:       prefix + "backend-v6-data",
		publicIP:            prefix + "public-ip",
		publicIPv6:          prefix + "public-ipv6",
		publicIPOverwrite:   prefix + "public-ip-overwrite",
		publicIPv6Overwrite: prefix + "public-ipv6-overwrite",
		nodePublicIP:        prefix + "node-public-ip",
		nodePublicIPv6:      prefix + "node-public-ipv6",
	}
}

// all are the annotations a peer's lease is read from: what strip keeps.
func (k keys) all() [8]string {
	return [8]string{k.managed, k.backendType, k.backendData, k.backendV6Data,
		k.publicIP, k.publicIPv6, k.publicIPOverwrite, k.publicIPv6Overwrite}
}

// node is what the store keeps of a Node object: its name, its podCIDRs and
// the annotations it reads. Everything else is dropped as soon as the object
// is decoded, so that a cluster of thousands of Nodes costs little memory.
type node struct {
	Name string
	// PodCIDRs is spec.podCIDRs, or spec.podCIDR alone when that is empty.
	PodCIDRs []string
	// Annotations holds only the store's keys (nil when it has none).
	Annotations map[string]string
}

// strip keeps what the store reads of n.
func (k keys) strip(n *corev1.Node) node {
	out := node{Name: n.Name, PodCIDRs: n.Spec.PodCIDRs}
	if len(out.PodCIDRs) == 0 && n.Spec.PodCIDR != "" {
		out.PodCIDRs = []string{n.Spec.PodCIDR}
	}
	for _, name := range k.all() {
		if v, ok := n.Annotations[name]; ok { // reading a nil map is fine
			if out.Annotations == nil {
				out.Annotations = make(map[string]string, 8)
			}
			out.Annotations[name] = v
		}
	}
	return out
}

// podSubnets parses a Node's podCIDRs: at most one per address family.
func podSubnets(cidrs []string) (v4, v6 netip.Prefix, err error) {
	if len(cidrs) > 2 {
		return v4, v6, fmt.Errorf("%d podCIDRs: at most one IPv4 and one IPv6", len(cidrs))
	}
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil || p.Addr().Is4In6() {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("podCIDR %q is not a CIDR", clip(c))
		}
		dst := &v4
		if p.Addr().Is6() {
			dst = &v6
		}
		if dst.IsValid() {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("podCIDRs %q: two of one address family", cidrs)
		}
		*dst = p.Masked()
	}
	return v4, v6, nil
}

// subnets returns the lease's subnets for the families cfg enables: each
// must be one of the Node's podCIDRs inside the family's network. A podCIDR
// of a family cfg does not enable is ignored, as flannel does.
func subnets(cfg *config.NetConf, name string, cidrs []string) (lease.Lease, error) {
	l := lease.Lease{Node: name}
	v4, v6, err := podSubnets(cidrs)
	if err != nil {
		return l, fmt.Errorf("node %s: %w", name, err)
	}
	for _, f := range cfg.Families() {
		s, fam := v4, "IPv4"
		if f.Network.Addr().Is6() {
			s, fam = v6, "IPv6"
		}
		switch {
		case !s.IsValid():
			return lease.Lease{}, fmt.Errorf("node %s has no %s podCIDR (podCIDRs %q)", name, fam, cidrs)
		case !subnet.Contains(f.Network, s):
			return lease.Lease{}, fmt.Errorf("podCIDR %s of node %s is not inside network %s", s, name, f.Network)
		}
		if fam == "IPv4" {
			l.Subnet = s
		} else {
			l.IPv6Subnet = s
		}
	}
	return l, nil
}

// parseNode turns a Node into the lease it publishes, reading the
// annotations of the families cfg enables, as flannel does: public-ip and
// backend-data for IPv4, public-ipv6 and backend-v6-data for IPv6, and
// backend-type. Anyone may write annotations, so nothing is trusted: a
// missing or malformed value is an error naming the annotation, and a Node
// without kube-subnet-manager: "true" gives errNotManaged.
func (k keys) parseNode(cfg *config.NetConf, n node) (lease.Lease, error) {
	a := n.Annotations
	if a[k.managed] != "true" {
		return lease.Lease{}, errNotManaged
	}
	l, err := subnets(cfg, n.Name, n.PodCIDRs)
	if err != nil {
		return lease.Lease{}, err
	}
	if l.Attrs.BackendType = a[k.backendType]; !utf8.ValidString(l.Attrs.BackendType) {
		return lease.Lease{}, fmt.Errorf("annotation %s %q is not UTF-8", k.backendType, clip(l.Attrs.BackendType))
	}
	if cfg.IPv4.Enabled {
		if l.Attrs.PublicIP, err = parseAddr(a, k.publicIP, false); err != nil {
			return lease.Lease{}, err
		}
		if l.Attrs.BackendData, err = canonical(a, k.backendData); err != nil {
			return lease.Lease{}, err
		}
	}
	if cfg.IPv6.Enabled {
		if l.Attrs.PublicIPv6, err = parseAddr(a, k.publicIPv6, true); err != nil {
			return lease.Lease{}, err
		}
		if l.Attrs.BackendV6Data, err = canonical(a, k.backendV6Data); err != nil {
			return lease.Lease{}, err
		}
	}
	return l, nil
}

// parseAddr reads an address annotation. It must be present and of the
// family; "0.0.0.0" (what flannel writes for an unset IPv4 address) gives
// the zero Addr.
func parseAddr(a map[string]string, key string, v6 bool) (netip.Addr, error) {
	s, ok := a[key]
	if !ok {
		return netip.Addr{}, fmt.Errorf("annotation %s is missing", key)
	}
	ip, err := netip.ParseAddr(s)
	if err == nil && !v6 {
		ip = ip.Unmap()
	}
	if err != nil || ip.Zone() != "" || ip.Is6() != v6 || ip.Is4In6() {
		return netip.Addr{}, fmt.Errorf("annotation %s %q is not an %s address", key, clip(s), family(v6))
	}
	if ip.IsUnspecified() {
		return netip.Addr{}, nil
	}
	return ip, nil
}

// canonical reads a JSON annotation (backend data) and returns it compact,
// as json.Marshal writes it, or nil when absent, empty or "null", so that a
// lease read back compares equal to the one published.
func canonical(a map[string]string, key string) (json.RawMessage, error) {
	t := bytes.TrimSpace([]byte(a[key]))
	if len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return nil, nil
	}
	if !json.Valid(t) {
		return nil, fmt.Errorf("annotation %s %q is not JSON", key, clip(string(t)))
	}
	out, err := json.Marshal(json.RawMessage(t))
	if err != nil {
		return nil, fmt.Errorf("annotation %s: %w", key, err)
	}
	return out, nil
}

// dataString is backend data as flannel writes it into an annotation:
// json.RawMessage's encoding, "null" when there is none.
func dataString(raw json.RawMessage) (string, error) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return "null", nil
	}
	out, err := json.Marshal(json.RawMessage(t))
	if err != nil {
		return "", fmt.Errorf("backend data: %w", err)
	}
	return string(out), nil
}

// published is the annotations a node with attrs publishes, following
// flannel's AcquireLease rule for rule, so that flannel nodes read them:
//
//   - backend-type always, and kube-subnet-manager "true";
//   - backend-data and public-ip unless the backend is vxlan without IPv4
//     data (an IPv6-only vxlan node); public-ip is "0.0.0.0" when unset;
//   - backend-v6-data and public-ipv6 for vxlan and wireguard with IPv6
//     data, and for host-gw and extension with an IPv6 address;
//   - an operator's public-ip-overwrite (public-ipv6-overwrite) is
//     published as public-ip (public-ipv6) instead of the node's address.
//
// It returns the annotations to publish.
func (k keys) published(attrs lease.Attrs, ov overwrites) (map[string]string, error) {
	bd, err := dataString(attrs.BackendData)
	if err != nil {
		return nil, err
	}
	v6bd, err := dataString(attrs.BackendV6Data)
	if err != nil {
		return nil, err
	}
	typ, hasV6 := attrs.BackendType, attrs.PublicIPv6.IsValid()
	want := map[string]string{k.managed: "true", k.backendType: typ}
	if typ != typeVXLAN || bd != "null" {
		want[k.backendData] = bd
		want[k.publicIP] = addrOr(ov.v4, attrs.PublicIP, "0.0.0.0")
	}
	if hasV6 && ((v6bd != "null" && (typ == typeVXLAN || typ == typeWireGuard)) || typ == typeHostGW || typ == typeExtension) {
		want[k.backendV6Data] = v6bd
		want[k.publicIPv6] = addrOr(ov.v6, attrs.PublicIPv6, "")
	}
	return want, nil
}

// overwrites are the addresses an operator asked the node to publish.
type overwrites struct{ v4, v6 netip.Addr }

// overwritesOf reads the public-ip-overwrite annotations; a value that is
// not an address of its family is reported in bad and ignored.
func (k keys) overwritesOf(a map[string]string) (ov overwrites, bad []error) {
	for _, o := range []struct {
		key string
		v6  bool
		dst *netip.Addr
	}{{k.publicIPOverwrite, false, &ov.v4}, {k.publicIPv6Overwrite, true, &ov.v6}} {
		if a[o.key] == "" {
			continue
		}
		ip, err := parseAddr(a, o.key, o.v6)
		if err != nil {
			bad = append(bad, err)
			continue
		}
		*o.dst = ip
	}
	return ov, bad
}

func addrOr(first, second netip.Addr, unset string) string {
	switch {
	case first.IsValid():
		return first.String()
	case second.IsValid():
		return second.String()
	}
	return unset
}

// changed returns the entries of want that a differs in.
func changed(a, want map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range want {
		if cur, ok := a[k]; !ok || cur != v {
			out[k] = v
		}
	}
	return out
}

func family(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

// clip shortens a value another writer left for an error message.
func clip(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
