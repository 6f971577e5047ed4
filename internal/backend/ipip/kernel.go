//go:build linux

package ipip

import (
	"context"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/netlinkx"
	"github.com/weft-net/weft/internal/reconcile"
)

// links is what the kernel path asks of netlink (*netlink.Handle; a fake in
// the tests).
type links interface {
	netlinkx.DeviceConfigurer
	LinkByName(name string) (netlink.Link, error)
	LinkAdd(link netlink.Link) error
	LinkDel(link netlink.Link) error
}

// Kernel is the kernel path: flannel.ipip is a kernel ipip device.
type Kernel struct {
	base
	k     links
	index int
}

var _ backend.Backend = (*Kernel)(nil)

// Attrs publishes the type and no data.
func (b *Kernel) Attrs(context.Context) (lease.Attrs, error) { return b.base.Attrs(), nil }

// device is the ipip device flannel makes: local = the public address, no
// remote, path MTU discovery on.
func (b *Kernel) device() *netlink.Iptun {
	return &netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: DeviceName, MTU: b.MTU()},
		Local: net.IP(b.d.External.PublicIP.AsSlice()), PMtuDisc: 1}
}

// create makes the device, replacing a device of the name that is not an
// ipip device with this node's local address.
func (b *Kernel) create() error {
	if l, err := b.k.LinkByName(DeviceName); err == nil {
		t, ok := l.(*netlink.Iptun)
		if ok && t.Local.Equal(net.IP(b.d.External.PublicIP.AsSlice())) && (len(t.Remote) == 0 || t.Remote.IsUnspecified()) {
			return nil
		}
		b.d.Logger.Info("replacing a device that is not this node's ipip device", "device", DeviceName, "type", l.Type())
		if err := b.k.LinkDel(l); err != nil {
			return fmt.Errorf("delete %s: %w", DeviceName, err)
		}
	}
	if err := b.k.LinkAdd(b.device()); err != nil {
		return fmt.Errorf("create ipip device %s: %w", DeviceName, err)
	}
	b.d.Logger.Info("created ipip device", "device", DeviceName, "local", b.d.External.PublicIP, "mtu", b.MTU())
	return nil
}

// Ensure makes flannel.ipip exist with the MTU, <own subnet>.0/32 and up.
func (b *Kernel) Ensure(_ context.Context, own lease.Lease) error {
	addr, err := ownAddr(own)
	if err != nil {
		return err
	}
	if err := b.create(); err != nil {
		return err
	}
	link, err := b.k.LinkByName(DeviceName)
	if err != nil {
		return fmt.Errorf("find %s: %w", DeviceName, err)
	}
	if err := netlinkx.ConfigureDevice(b.k, link, b.MTU(), addr); err != nil {
		return err
	}
	b.index = link.Attrs().Index
	return nil
}

// Observe finds flannel.ipip as it is (backend.Observer).
func (b *Kernel) Observe(lease.Lease) ([]string, error) {
	link, err := b.k.LinkByName(DeviceName)
	if err != nil {
		return []string{DeviceName}, nil
	}
	b.index = link.Attrs().Index
	return nil, nil
}

// Peer is the peer's route.
func (b *Kernel) Peer(own, p lease.Lease) (reconcile.Objects, error) { return b.route(own, p, b.index) }

// Links returns flannel.ipip's index.
func (b *Kernel) Links() []int {
	if b.index > 0 {
		return []int{b.index}
	}
	return nil
}
