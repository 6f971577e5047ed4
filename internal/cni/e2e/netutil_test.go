//go:build linux

package e2e

import (
	"net/netip"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/weft-net/weft/internal/lab"
)

// links lists the link names (and kinds) in a namespace.
func links(t testing.TB, n ns.NetNS) map[string]netlink.Link {
	t.Helper()
	out := map[string]netlink.Link{}
	err := n.Do(func(ns.NetNS) error {
		ls, err := netlink.LinkList()
		for _, l := range ls {
			out[l.Attrs().Name] = l
		}
		return err
	})
	if err != nil {
		t.Fatalf("list links: %v", err)
	}
	return out
}

// vethCount counts the pods' veth links in a namespace (a lab node's own
// underlay interface, eth0, is a veth too and is not counted).
func vethCount(t testing.TB, n ns.NetNS) int {
	t.Helper()
	c := 0
	for name, l := range links(t, n) {
		if l.Type() == "veth" && name != lab.NodeIface {
			c++
		}
	}
	return c
}

// globalAddrs lists the global unicast addresses in a namespace.
func globalAddrs(t testing.TB, n ns.NetNS) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	err := n.Do(func(ns.NetNS) error {
		as, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
		for _, a := range as {
			ip, _ := netip.AddrFromSlice(a.IP)
			ones, _ := a.Mask.Size()
			if ip.Unmap().IsGlobalUnicast() {
				out = append(out, netip.PrefixFrom(ip.Unmap(), ones))
			}
		}
		return err
	})
	if err != nil {
		t.Fatalf("list addresses: %v", err)
	}
	return out
}

// routes lists "dst via gw dev" strings of the main table in a namespace.
func routes(t testing.TB, n ns.NetNS, family int) map[string]netlink.Route {
	t.Helper()
	out := map[string]netlink.Route{}
	err := n.Do(func(ns.NetNS) error {
		rs, err := netlink.RouteList(nil, family)
		for _, r := range rs {
			dst := "default"
			if r.Dst != nil && !r.Dst.IP.IsUnspecified() {
				dst = r.Dst.String()
			}
			out[dst] = r
		}
		return err
	})
	if err != nil {
		t.Fatalf("list routes: %v", err)
	}
	return out
}
