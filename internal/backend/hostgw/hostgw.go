//go:build linux

// Package hostgw is the host-gw backend: a route to each peer's subnet via
// the peer's public address on the external interface. It needs every peer on
// a directly connected subnet; a peer that is not is reported, never given a
// route that cannot work.
package hostgw

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/kernel"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/reconcile"
)

// HostGW is the backend.
type HostGW struct {
	d backend.Deps
}

var _ backend.Backend = (*HostGW)(nil)

// Name is the backend type.
const Name = "host-gw"

// Type is the host-gw backend type for the registry: no options, no device.
func Type() backend.Type { return backend.Type{Name: Name, New: New} }

// New is the backend.Factory.
func New(d backend.Deps) (backend.Backend, error) { return &HostGW{d: d}, nil }

// Attrs publishes the type and no data.
func (h *HostGW) Attrs(context.Context) (lease.Attrs, error) {
	return lease.Attrs{PublicIP: h.d.External.PublicIP, PublicIPv6: h.d.External.PublicIPv6, BackendType: Name}, nil
}

// Ensure has no device to make.
func (h *HostGW) Ensure(context.Context, lease.Lease) error { return nil }

// Peer routes the peer's subnets via its public addresses.
func (h *HostGW) Peer(own lease.Lease, p lease.Lease) (reconcile.Objects, error) {
	var st reconcile.Objects
	if err := backend.PeerCheck(own, p, Name); err != nil {
		return st, err
	}
	ext := h.d.External
	for _, fam := range []struct {
		subnet netip.Prefix
		via    netip.Addr
	}{{p.Subnet, p.Attrs.PublicIP}, {p.IPv6Subnet, p.Attrs.PublicIPv6}} {
		if !fam.subnet.IsValid() {
			continue
		}
		if !fam.via.IsValid() {
			return reconcile.Objects{}, fmt.Errorf("it has no public address for %s", fam.subnet)
		}
		if !ext.DirectlyConnected(fam.via) {
			return reconcile.Objects{}, fmt.Errorf("host-gw needs peers on a directly connected subnet, but %s is not on any subnet of %s", fam.via, ext.Name)
		}
		st.Routes = append(st.Routes, kernel.Route{Dst: fam.subnet, Gw: fam.via, LinkIndex: ext.Index})
	}
	return st, nil
}

// Observe: host-gw has no device (backend.Observer).
func (h *HostGW) Observe(lease.Lease) ([]string, error) { return nil, nil }

// Links: host-gw owns no device.
func (h *HostGW) Links() []int { return nil }

// Devices: host-gw owns no device.
func (h *HostGW) Devices() []kernel.Device { return nil }

// MTU is the external interface's.
func (h *HostGW) MTU() int { return h.d.External.MTU }
