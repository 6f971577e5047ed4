package kube

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/weft-net/weft/internal/config"
)

// PublicAddrs returns the public addresses this node's Node gives in
// flannel's node-public-ip and node-public-ipv6 annotations, for the address
// families cfg enables; the zero Addr where one is unset or empty.
//
// flanneld v0.28 reads them once at start (main.go, GetStoredPublicIP) and
// lets each stand in for --public-ip / --public-ipv6, winning over the flag:
// the node uses that address, publishes it as public-ip (unless an
// operator's public-ip-overwrite says otherwise) and, when no --iface,
// --iface-regex or --iface-can-reach is given, takes the interface that
// holds it. The daemon applies that precedence; the store only reads.
//
// A value that is not a unicast address of its family is an error naming
// the annotation and the value (flanneld exits there); a value of a family
// cfg does not enable is ignored and logged once. A Node that is not
// registered yet gives an error wrapping store.ErrNotYet (weftd may start
// before its kubelet registers the Node, and the annotation may come with
// the registration). Other errors are the API's.
func (s *Store) PublicAddrs(ctx context.Context, cfg *config.NetConf) (v4, v6 netip.Addr, err error) {
	if cfg == nil {
		return v4, v6, errors.New("public addresses of the node: no network configuration")
	}
	name, err := s.node(ctx)
	if err != nil {
		return v4, v6, err
	}
	n, err := s.o.API.GetNode(ctx, name)
	if apierrors.IsNotFound(err) {
		return v4, v6, notYet(name, nil)
	}
	if err != nil {
		return v4, v6, fmt.Errorf("get node %s: %w", name, err)
	}
	got, ignored, err := s.k.nodePublicAddrs(n.Annotations, cfg)
	for _, key := range ignored {
		if s.warn.first("ignored " + key) {
			s.log.Info("ignoring an annotation of an address family the network does not enable", "node", name,
				"annotation", key, "value", clip(n.Annotations[key]))
		}
	}
	if err != nil {
		return v4, v6, fmt.Errorf("node %s: %w", name, err)
	}
	for _, g := range []struct {
		key  string
		addr netip.Addr
	}{{s.k.nodePublicIP, got[0]}, {s.k.nodePublicIPv6, got[1]}} {
		if g.addr.IsValid() {
			s.log.Info("the Node gives this node's public address; it stands in for the flag", "node", name,
				"annotation", g.key, "address", g.addr)
		}
	}
	return got[0], got[1], nil
}

// nodePublicAddrs reads the node-public-ip annotations of a for the families
// cfg enables: [0] IPv4, [1] IPv6, the zero Addr where unset or empty. It
// returns the keys it ignored (set, for a family cfg does not enable) and an
// error naming each malformed value.
func (k keys) nodePublicAddrs(a map[string]string, cfg *config.NetConf) (got [2]netip.Addr, ignored []string, err error) {
	var bad []string
	for i, f := range []struct {
		key string
		v6  bool
		on  bool
	}{{k.nodePublicIP, false, cfg.IPv4.Enabled}, {k.nodePublicIPv6, true, cfg.IPv6.Enabled}} {
		s, ok := a[f.key]
		switch {
		case !ok || s == "":
			continue
		case !f.on:
			ignored = append(ignored, f.key)
			continue
		}
		ip, err := unicastAddr(s, f.v6)
		if err != nil {
			bad = append(bad, fmt.Sprintf("annotation %s %q %s", f.key, clip(s), err))
			continue
		}
		got[i] = ip
	}
	if len(bad) > 0 {
		return [2]netip.Addr{}, ignored, errors.New(strings.Join(bad, "; "))
	}
	return got, ignored, nil
}

// unicastAddr parses s as an address of one family that a node can send
// from and be sent to: no zone, not unspecified, loopback, multicast or the
// IPv4 broadcast address. An IPv4-mapped IPv6 address counts as IPv4, as in
// flanneld (net.ParseIP). The error completes "annotation K "V" ...".
func unicastAddr(s string, v6 bool) (netip.Addr, error) {
	ip, err := netip.ParseAddr(s)
	if err != nil || ip.Zone() != "" {
		return netip.Addr{}, errors.New("is not an IP address")
	}
	if !v6 {
		ip = ip.Unmap()
	}
	if ip.Is6() != v6 || ip.Is4In6() {
		return netip.Addr{}, fmt.Errorf("is not an %s address", family(v6))
	}
	if ip.IsUnspecified() || ip.IsLoopback() || ip.IsMulticast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return netip.Addr{}, errors.New("is not a unicast address this node can use")
	}
	return ip, nil
}
