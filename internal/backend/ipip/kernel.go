//go:build linux

package ipip

import (
	"context"
	"fmt"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/kernel"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/reconcile"
)

// Kernel is the kernel path: flannel.ipip is a kernel ipip device.
type Kernel struct {
	base
	index int
}

var _ backend.Backend = (*Kernel)(nil)

// Attrs publishes the type and no data.
func (b *Kernel) Attrs(context.Context) (lease.Attrs, error) { return b.base.Attrs(), nil }

// device is the ipip device flannel makes: local = the public address, no
// remote, path MTU discovery on.
func (b *Kernel) device() kernel.LinkSpec {
	return kernel.LinkSpec{Name: DeviceName, Kind: kernel.KindIPIP, MTU: b.MTU(), IPIP: &kernel.IPIP{Local: b.d.External.PublicIP}}
}

// create makes the device, replacing a device of the name that is not an
// ipip device with this node's local address.
func (b *Kernel) create() error {
	k := b.d.Kernel
	if l, err := k.LinkByName(DeviceName); err == nil {
		if l.IPIP != nil && l.IPIP.Local == b.d.External.PublicIP && !l.IPIP.Remote.IsValid() {
			return nil
		}
		b.d.Logger.Info("replacing a device that is not this node's ipip device", "device", DeviceName, "kind", l.Kind)
		if err := k.DeleteLink(l.Index); err != nil {
			return fmt.Errorf("delete %s: %w", DeviceName, err)
		}
	}
	if err := k.AddLink(b.device()); err != nil {
		return fmt.Errorf("create ipip device %s: %w", DeviceName, err)
	}
	b.d.Logger.Info("created ipip device", "device", DeviceName, "local", b.d.External.PublicIP, "mtu", b.MTU())
	return nil
}

// Ensure makes flannel.ipip exist (Devices gives its MTU and address to the
// reconciler).
func (b *Kernel) Ensure(_ context.Context, own lease.Lease) error {
	if _, err := ownAddr(own); err != nil {
		return err
	}
	b.own = own
	if err := b.create(); err != nil {
		return err
	}
	link, err := b.d.Kernel.LinkByName(DeviceName)
	if err != nil {
		return fmt.Errorf("find %s: %w", DeviceName, err)
	}
	b.index = link.Index
	return nil
}

// Observe finds flannel.ipip as it is (backend.Observer).
func (b *Kernel) Observe(own lease.Lease) ([]string, error) {
	b.own = own
	link, err := b.d.Kernel.LinkByName(DeviceName)
	if err != nil {
		return []string{DeviceName}, nil
	}
	b.index = link.Index
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
