//go:build linux

package netlinkx

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/internal/kernel"
)

// Links implements kernel.Kernel.
func (h *Handle) Links() ([]kernel.Link, error) {
	links, err := retry("links", h.h.LinkList)
	if err != nil {
		return nil, err
	}
	out := make([]kernel.Link, 0, len(links))
	for _, l := range links {
		out = append(out, toLink(l))
	}
	return out, nil
}

// LinkByName implements kernel.Kernel.
func (h *Handle) LinkByName(name string) (kernel.Link, error) {
	l, err := h.h.LinkByName(name)
	if err != nil {
		if errors.As(err, new(netlink.LinkNotFoundError)) {
			return kernel.Link{}, fmt.Errorf("link %s: %w", name, kernel.ErrLinkNotFound)
		}
		return kernel.Link{}, fmt.Errorf("find link %s: %w", name, err)
	}
	return toLink(l), nil
}

// toLink reads what weft uses of a link.
func toLink(l netlink.Link) kernel.Link {
	a := l.Attrs()
	out := kernel.Link{Index: a.Index, Name: a.Name, Kind: l.Type(), MTU: a.MTU, Up: a.Flags&net.FlagUp != 0}
	if len(a.HardwareAddr) == 6 {
		out.MAC = kernel.MAC(a.HardwareAddr)
	}
	switch x := l.(type) {
	case *netlink.Vxlan:
		out.VXLAN = &kernel.VXLAN{VNI: x.VxlanId, Dev: x.VtepDevIndex, Local: AddrFromIP(x.SrcAddr), Port: x.Port,
			Learning: x.Learning, GBP: x.GBP}
	case *netlink.Iptun:
		out.IPIP = &kernel.IPIP{Local: AddrFromIP(x.Local), Remote: AddrFromIP(x.Remote)}
		if out.IPIP.Remote.IsUnspecified() {
			out.IPIP.Remote = netip.Addr{}
		}
	case *netlink.Device:
		if out.Kind == "device" {
			out.Kind = ""
		}
	case *netlink.Tuntap:
		out.Kind = kernel.KindTUN
	case *netlink.GenericLink:
		out.Kind = x.LinkType
	}
	return out
}

// AddLink implements kernel.Kernel.
func (h *Handle) AddLink(s kernel.LinkSpec) error {
	attrs := netlink.LinkAttrs{Name: s.Name, MTU: s.MTU}
	if !s.MAC.IsZero() {
		attrs.HardwareAddr = s.MAC.HardwareAddr()
	}
	var l netlink.Link
	switch s.Kind {
	case kernel.KindVXLAN:
		if s.VXLAN == nil {
			return fmt.Errorf("add %s: a vxlan link needs its settings", s.Name)
		}
		v := s.VXLAN
		l = &netlink.Vxlan{LinkAttrs: attrs, VxlanId: v.VNI, VtepDevIndex: v.Dev, SrcAddr: v.Local.AsSlice(), Port: v.Port,
			Learning: v.Learning, GBP: v.GBP}
	case kernel.KindIPIP:
		if s.IPIP == nil {
			return fmt.Errorf("add %s: an ipip link needs its settings", s.Name)
		}
		t := &netlink.Iptun{LinkAttrs: attrs, Local: net.IP(s.IPIP.Local.AsSlice()), PMtuDisc: 1}
		if s.IPIP.Remote.IsValid() {
			t.Remote = s.IPIP.Remote.AsSlice()
		}
		l = t
	case kernel.KindWireGuard:
		l = &netlink.Wireguard{LinkAttrs: attrs}
	default:
		return fmt.Errorf("add %s: links of kind %q are not made through rtnetlink", s.Name, s.Kind)
	}
	if err := h.h.LinkAdd(l); err != nil {
		return fmt.Errorf("add %s link %s: %w", s.Kind, s.Name, err)
	}
	return nil
}

// byIndex is a link value that the netlink library's setters accept.
func byIndex(index int) netlink.Link {
	return &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: index}}
}

// DeleteLink implements kernel.Kernel.
func (h *Handle) DeleteLink(index int) error {
	if err := h.h.LinkDel(byIndex(index)); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete link #%d: %w", index, err)
	}
	return nil
}

// SetLinkMTU implements kernel.Kernel.
func (h *Handle) SetLinkMTU(index, mtu int) error {
	if err := h.h.LinkSetMTU(byIndex(index), mtu); err != nil {
		return fmt.Errorf("set mtu %d on link #%d: %w", mtu, index, err)
	}
	return nil
}

// SetLinkMAC implements kernel.Kernel.
func (h *Handle) SetLinkMAC(index int, mac kernel.MAC) error {
	if err := h.h.LinkSetHardwareAddr(byIndex(index), mac.HardwareAddr()); err != nil {
		return fmt.Errorf("set mac %s on link #%d: %w", mac, index, err)
	}
	return nil
}

// SetLinkUp implements kernel.Kernel.
func (h *Handle) SetLinkUp(index int) error {
	if err := h.h.LinkSetUp(byIndex(index)); err != nil {
		return fmt.Errorf("set link #%d up: %w", index, err)
	}
	return nil
}

// Addrs implements kernel.Kernel.
func (h *Handle) Addrs(index int) ([]netip.Prefix, error) {
	addrs, err := retry("addresses", func() ([]netlink.Addr, error) { return h.h.AddrList(byIndex(index), unix.AF_UNSPEC) })
	if err != nil {
		return nil, err
	}
	out := make([]netip.Prefix, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, PrefixFromIPNetKeepHost(a.IPNet))
	}
	return out, nil
}

// AddAddr implements kernel.Kernel.
func (h *Handle) AddAddr(index int, p netip.Prefix) error {
	ipn := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
	if err := h.h.AddrReplace(byIndex(index), &netlink.Addr{IPNet: ipn}); err != nil {
		return fmt.Errorf("add %s to link #%d: %w", p, index, err)
	}
	return nil
}

// DeleteAddr implements kernel.Kernel.
func (h *Handle) DeleteAddr(index int, p netip.Prefix) error {
	ipn := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
	if err := h.h.AddrDel(byIndex(index), &netlink.Addr{IPNet: ipn}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("remove %s from link #%d: %w", p, index, err)
	}
	return nil
}

// RouteTo implements kernel.Kernel.
func (h *Handle) RouteTo(dst netip.Addr) (int, error) {
	routes, err := h.h.RouteGet(dst.AsSlice())
	if err != nil {
		return 0, fmt.Errorf("route to %s: %w", dst, err)
	}
	if len(routes) == 0 {
		return 0, fmt.Errorf("route to %s: no route", dst)
	}
	return routes[0].LinkIndex, nil
}
