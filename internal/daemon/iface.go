//go:build linux

package daemon

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/kernel"
)

// linkInfo is a link with its addresses.
type linkInfo struct {
	link  kernel.Link
	addrs []netip.Prefix
}

// chooseExternal picks the interface for inter-node traffic as flanneld
// does: --iface (name or address, first match), else --iface-regex (name or
// address), else --iface-can-reach, else the default route's interface; then
// the public addresses (--public-ip/--public-ipv6 or the interface's).
func chooseExternal(h kernel.Kernel, o *config.Options, nc *config.NetConf) (backend.External, error) {
	links, err := allLinks(h)
	if err != nil {
		return backend.External{}, err
	}
	li, how, err := pickLink(h, links, o)
	if err != nil {
		return backend.External{}, err
	}
	ext := backend.External{Name: li.link.Name, Index: li.link.Index, MTU: li.link.MTU, Addrs: li.addrs}
	for _, f := range []struct {
		on          bool
		v6          bool
		given       netip.Addr
		dst         *netip.Addr
		flag, label string
	}{
		{nc.IPv4.Enabled, false, o.PublicIP, &ext.PublicIP, "--public-ip", "IPv4"},
		{nc.IPv6.Enabled, true, o.PublicIPv6, &ext.PublicIPv6, "--public-ipv6", "global IPv6"},
	} {
		if !f.on {
			continue
		}
		if *f.dst = f.given; !f.dst.IsValid() {
			*f.dst = firstGlobal(li.addrs, f.v6)
		}
		if !f.dst.IsValid() {
			return backend.External{}, fmt.Errorf("interface %s (%s) has no %s address; give %s or choose another with --iface",
				ext.Name, how, f.label, f.flag)
		}
	}
	if ext.MTU <= 0 {
		return backend.External{}, fmt.Errorf("interface %s reports MTU %d", ext.Name, ext.MTU)
	}
	return ext, nil
}

func allLinks(h kernel.Kernel) ([]linkInfo, error) {
	links, err := h.Links()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	out := make([]linkInfo, 0, len(links))
	for _, l := range links {
		addrs, err := h.Addrs(l.Index)
		if err != nil {
			return nil, fmt.Errorf("list addresses of %s: %w", l.Name, err)
		}
		out = append(out, linkInfo{link: l, addrs: addrs})
	}
	return out, nil
}

func pickLink(h kernel.Kernel, links []linkInfo, o *config.Options) (linkInfo, string, error) {
	if len(o.Iface) > 0 {
		for _, want := range o.Iface {
			for _, li := range links {
				if li.link.Name == want || hasAddr(li, want) {
					return li, "--iface " + want, nil
				}
			}
		}
		return linkInfo{}, "", fmt.Errorf("no interface matches --iface %q", o.Iface)
	}
	if len(o.IfaceRegex) > 0 {
		for _, expr := range o.IfaceRegex {
			re, err := regexp.Compile(expr)
			if err != nil {
				return linkInfo{}, "", fmt.Errorf("--iface-regex %q: %w", expr, err)
			}
			for _, li := range links {
				if re.MatchString(li.link.Name) || anyAddrMatches(li, re) {
					return li, "--iface-regex " + expr, nil
				}
			}
		}
		return linkInfo{}, "", fmt.Errorf("no interface matches --iface-regex %q", o.IfaceRegex)
	}
	if o.IfaceCanReach.IsValid() {
		idx, err := h.RouteTo(o.IfaceCanReach)
		if err != nil {
			return linkInfo{}, "", fmt.Errorf("--iface-can-reach %s: %w", o.IfaceCanReach, err)
		}
		if li, ok := byIndex(links, idx); ok {
			return li, "--iface-can-reach", nil
		}
	}
	idx, err := h.DefaultRouteLinks()
	if err != nil {
		return linkInfo{}, "", fmt.Errorf("find the default route: %w", err)
	}
	for _, i := range idx {
		if li, ok := byIndex(links, i); ok {
			return li, "default route", nil
		}
	}
	return linkInfo{}, "", errors.New("no default route to pick the external interface from; give --iface")
}

func byIndex(links []linkInfo, idx int) (linkInfo, bool) {
	for _, li := range links {
		if li.link.Index == idx {
			return li, true
		}
	}
	return linkInfo{}, false
}

func hasAddr(li linkInfo, s string) bool {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return false
	}
	for _, p := range li.addrs {
		if p.Addr() == a.Unmap() {
			return true
		}
	}
	return false
}

func anyAddrMatches(li linkInfo, re *regexp.Regexp) bool {
	for _, p := range li.addrs {
		if re.MatchString(p.Addr().String()) {
			return true
		}
	}
	return false
}

func firstGlobal(addrs []netip.Prefix, v6 bool) netip.Addr {
	for _, p := range addrs {
		a := p.Addr()
		if a.Is6() == v6 && a.IsGlobalUnicast() {
			return a
		}
	}
	return netip.Addr{}
}
