//go:build linux

package netlinkx

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DeviceConfigurer is what ConfigureDevice asks of netlink: a
// *netlink.Handle (Handle.Raw), or a test's fake.
type DeviceConfigurer interface {
	LinkSetMTU(link netlink.Link, mtu int) error
	LinkSetUp(link netlink.Link) error
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	AddrReplace(link netlink.Link, addr *netlink.Addr) error
	AddrDel(link netlink.Link, addr *netlink.Addr) error
}

// ConfigureDevice gives a backend's device its MTU and the addresses it
// holds (the own subnets' first addresses, /32 or /128: one, or one per
// family on a device that carries both), removes any other address but
// link-local ones, and sets it up. It writes only what differs, except the
// addresses and the up flag (both idempotent).
func ConfigureDevice(k DeviceConfigurer, link netlink.Link, mtu int, addrs ...netip.Prefix) error {
	name := link.Attrs().Name
	if link.Attrs().MTU != mtu {
		if err := k.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("set mtu of %s: %w", name, err)
		}
	}
	have, err := retry("addresses", func() ([]netlink.Addr, error) { return k.AddrList(link, unix.AF_UNSPEC) })
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", name, err)
	}
	for _, a := range have {
		if p := PrefixFromIPNetKeepHost(a.IPNet); !slices.Contains(addrs, p) && !p.Addr().IsLinkLocalUnicast() {
			if err := k.AddrDel(link, &netlink.Addr{IPNet: IPNet(p)}); err != nil {
				return fmt.Errorf("remove stale address %s from %s: %w", p, name, err)
			}
		}
	}
	for _, addr := range addrs {
		if err := k.AddrReplace(link, &netlink.Addr{IPNet: IPNet(addr)}); err != nil {
			return fmt.Errorf("add %s to %s: %w", addr, name, err)
		}
	}
	if err := k.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}
