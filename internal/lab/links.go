//go:build linux

package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// handles caches one netlink handle (and the namespace fd it was made from)
// per namespace; nothing in it refers to the caller's own namespace.
type handles struct {
	fds map[string]netns.NsHandle
	nl  map[string]*netlink.Handle
}

func newHandles() *handles {
	return &handles{fds: map[string]netns.NsHandle{}, nl: map[string]*netlink.Handle{}}
}

// get returns the netlink handle and namespace fd of ns.
func (h *handles) get(ns string) (*netlink.Handle, netns.NsHandle, error) {
	if nl, ok := h.nl[ns]; ok {
		return nl, h.fds[ns], nil
	}
	fd, err := netns.GetFromPath(NSPath(ns))
	if err != nil {
		return nil, 0, fmt.Errorf("open netns %s: %w", ns, err)
	}
	nl, err := netlink.NewHandleAt(fd)
	if err != nil {
		fd.Close()
		return nil, 0, fmt.Errorf("netlink handle in %s: %w", ns, err)
	}
	h.fds[ns], h.nl[ns] = fd, nl
	return nl, fd, nil
}

func (h *handles) close() {
	for ns, nl := range h.nl {
		nl.Close()
		fd := h.fds[ns]
		fd.Close()
	}
	clear(h.nl)
	clear(h.fds)
}

// linkUp sets a link up by name.
func linkUp(nl *netlink.Handle, ns, name string) error {
	l, err := nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find link %s in %s: %w", name, ns, err)
	}
	if err := nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up in %s: %w", name, ns, err)
	}
	return nil
}

// ensureBridge creates bridge name in ns unless it exists, and sets it up.
// snooping sets IGMP/MLD snooping of a new bridge: the underlay switches turn
// it off (a bridge that has just come up and snoops drops IPv6 neighbour
// solicitations for about a second), cni0 keeps the kernel's default like the
// bridge CNI plugin.
func (h *handles) ensureBridge(ns, name string, mtu int, snooping bool) (netlink.Link, error) {
	nl, _, err := h.get(ns)
	if err != nil {
		return nil, err
	}
	if l, err := nl.LinkByName(name); err == nil {
		return l, linkUp(nl, ns, name)
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}, MulticastSnooping: &snooping}
	if err := nl.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("create bridge %s in %s: %w", name, ns, err)
	}
	if err := linkUp(nl, ns, name); err != nil {
		return nil, err
	}
	return nl.LinkByName(name)
}

// addVeth creates a veth pair from inside ns: name stays in ns and peer is
// created directly in peerNS, so neither end ever exists in another
// namespace. When bridge is not empty, name is enslaved to it; name is set up.
func (h *handles) addVeth(ns, name, peerNS, peer, bridge string, mtu int) error {
	nl, _, err := h.get(ns)
	if err != nil {
		return err
	}
	_, peerFd, err := h.get(peerNS)
	if err != nil {
		return err
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}, PeerName: peer,
		PeerNamespace: netlink.NsFd(peerFd)}
	if err := nl.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s/%s -> %s/%s: %w", ns, name, peerNS, peer, err)
	}
	l, err := nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find veth %s in %s: %w", name, ns, err)
	}
	if bridge != "" {
		br, err := nl.LinkByName(bridge)
		if err != nil {
			return fmt.Errorf("find bridge %s in %s: %w", bridge, ns, err)
		}
		if err := nl.LinkSetMaster(l, br); err != nil {
			return fmt.Errorf("enslave %s to %s in %s: %w", name, bridge, ns, err)
		}
	}
	if err := nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up in %s: %w", name, ns, err)
	}
	return nil
}

// configure gives link name in ns its addresses (IPv6 without duplicate
// address detection, so they are usable at once), sets it up and adds one
// default route per gateway of a family the link has an address in.
func (h *handles) configure(ns, name string, addrs []netip.Prefix, gws []netip.Addr) error {
	nl, _, err := h.get(ns)
	if err != nil {
		return err
	}
	l, err := nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find link %s in %s: %w", name, ns, err)
	}
	for _, a := range addrs {
		addr := &netlink.Addr{IPNet: ipNet(a)}
		if a.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := nl.AddrReplace(l, addr); err != nil {
			return fmt.Errorf("add address %s to %s in %s: %w", a, name, ns, err)
		}
	}
	if err := nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up in %s: %w", name, ns, err)
	}
	for _, gw := range gws {
		if !hasFamily(addrs, gw) {
			continue
		}
		def := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if gw.Is6() {
			def = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: ipNet(def), Gw: net.IP(gw.AsSlice())}
		if err := nl.RouteReplace(r); err != nil {
			return fmt.Errorf("add default route via %s in %s: %w", gw, ns, err)
		}
	}
	return nil
}

func hasFamily(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Addr().Is6() == a.Is6() {
			return true
		}
	}
	return false
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// linkWaitLimit bounds how long waitReady waits for one link.
const linkWaitLimit = 5 * time.Second

// waitReady waits until link name in ns is operationally up and, with ipv6,
// has a usable (non-tentative) link-local address. A new veth reaches that
// state up to a second after it is set up (the kernel's link watch batches
// carrier events), and until then IPv6 neighbour discovery for forwarded
// packets stalls.
func (h *handles) waitReady(ctx context.Context, ns, name string, ipv6 bool) error {
	nl, _, err := h.get(ns)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(linkWaitLimit)
	for {
		ready, err := linkReady(nl, name, ipv6)
		if err != nil {
			return fmt.Errorf("check link %s in %s: %w", name, ns, err)
		}
		if ready {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("link %s in %s not ready after %v", name, ns, linkWaitLimit)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for link %s in %s: %w", name, ns, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func linkReady(nl *netlink.Handle, name string, ipv6 bool) (bool, error) {
	l, err := nl.LinkByName(name)
	if err != nil {
		return false, err
	}
	if l.Attrs().OperState != netlink.OperUp {
		return false, nil
	}
	if !ipv6 {
		return true, nil
	}
	addrs, err := nl.AddrList(l, netlink.FAMILY_V6)
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() && a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_OPTIMISTIC) == 0 {
			return true, nil
		}
	}
	return false, nil
}
