//go:build linux

// Package backendtest has fakes for the backends' unit tests.
package backendtest

import (
	"fmt"
	"net"
	"slices"

	"github.com/vishvananda/netlink"
)

// Links is the kernel as a backend's device code sees it through netlink:
// links by name with their addresses, and a log of the calls that changed
// something ("add ipip", "mtu 1480", "addr 10.244.1.0/32", "up", ...). It
// implements netlinkx.DeviceConfigurer and the backends' LinkByName,
// LinkAdd and LinkDel.
type Links struct {
	ByName map[string]netlink.Link
	Addrs  map[string][]netlink.Addr
	Calls  []string
	// AddErr, when set, is what LinkAdd fails with.
	AddErr error
	next   int
}

// NewLinks returns an empty kernel.
func NewLinks() *Links {
	return &Links{ByName: map[string]netlink.Link{}, Addrs: map[string][]netlink.Addr{}, next: 10}
}

// LinkByName returns the link, or netlink.LinkNotFoundError.
func (f *Links) LinkByName(name string) (netlink.Link, error) {
	if l, ok := f.ByName[name]; ok {
		return l, nil
	}
	return nil, netlink.LinkNotFoundError{}
}

// LinkAdd adds l with the next index, unless AddErr is set.
func (f *Links) LinkAdd(l netlink.Link) error {
	f.Calls = append(f.Calls, "add "+l.Type())
	if f.AddErr != nil {
		return f.AddErr
	}
	f.next++
	l.Attrs().Index = f.next
	f.ByName[l.Attrs().Name] = l
	return nil
}

// LinkDel removes l and its addresses.
func (f *Links) LinkDel(l netlink.Link) error {
	f.Calls = append(f.Calls, "del "+l.Type())
	delete(f.ByName, l.Attrs().Name)
	delete(f.Addrs, l.Attrs().Name)
	return nil
}

// LinkSetMTU sets l's MTU.
func (f *Links) LinkSetMTU(l netlink.Link, mtu int) error {
	f.Calls = append(f.Calls, fmt.Sprintf("mtu %d", mtu))
	l.Attrs().MTU = mtu
	return nil
}

// LinkSetUp sets l up.
func (f *Links) LinkSetUp(l netlink.Link) error {
	f.Calls = append(f.Calls, "up")
	l.Attrs().Flags |= net.FlagUp
	return nil
}

// AddrList returns l's addresses (any family).
func (f *Links) AddrList(l netlink.Link, _ int) ([]netlink.Addr, error) {
	return slices.Clone(f.Addrs[l.Attrs().Name]), nil
}

// AddrReplace adds a to l, replacing an equal one.
func (f *Links) AddrReplace(l netlink.Link, a *netlink.Addr) error {
	f.Calls = append(f.Calls, "addr "+a.IPNet.String())
	name := l.Attrs().Name
	f.Addrs[name] = slices.DeleteFunc(f.Addrs[name], func(b netlink.Addr) bool { return b.IPNet.String() == a.IPNet.String() })
	f.Addrs[name] = append(f.Addrs[name], *a)
	return nil
}

// AddrDel removes a from l.
func (f *Links) AddrDel(l netlink.Link, a *netlink.Addr) error {
	f.Calls = append(f.Calls, "deladdr "+a.IPNet.String())
	name := l.Attrs().Name
	f.Addrs[name] = slices.DeleteFunc(f.Addrs[name], func(b netlink.Addr) bool { return b.IPNet.String() == a.IPNet.String() })
	return nil
}
