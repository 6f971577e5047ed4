//go:build linux

package ipip

import (
	"context"
	"io"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/backend/tunnel"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/reconcile"
)

// Userspace is the userspace path: flannel.ipip is a TUN served by the
// tunnel engine's ipip encapsulation.
type Userspace struct {
	base
	eng *tunnel.Engine
}

var (
	_ backend.Backend       = (*Userspace)(nil)
	_ backend.PeerForgetter = (*Userspace)(nil)
	_ io.Closer             = (*Userspace)(nil)
)

func newUserspace(b base) *Userspace {
	o := backend.SettingsOf(b.d, NewSettings).Tuning
	return &Userspace{base: b, eng: tunnel.New(tunnel.Config{Device: DeviceName, Encap: tunnel.IPIP(), Options: o,
		Local: b.d.External.PublicIP, Network: b.d.Net.IPv4.Network, MTU: b.MTU(), Kernel: b.d.Kernel, Logger: b.d.Logger})}
}

// Attrs publishes the type and no data.
func (u *Userspace) Attrs(context.Context) (lease.Attrs, error) { return u.base.Attrs(), nil }

// Ensure makes the TUN (or re-attaches to the one a previous weftd left)
// and runs the data path.
func (u *Userspace) Ensure(ctx context.Context, own lease.Lease) error {
	if _, err := ownAddr(own); err != nil {
		return err
	}
	u.own = own
	return u.eng.Ensure(ctx, own.Subnet)
}

// Peer is the peer's route; the peer also goes into the engine's table
// (also with DirectRouting: such a peer may still send ipip to us).
func (u *Userspace) Peer(own, p lease.Lease) (reconcile.Objects, error) {
	st, err := u.route(own, p, u.eng.Index())
	if err != nil {
		u.eng.ForgetPeer(p.Key())
		return st, err
	}
	u.eng.SetPeer(p.Key(), p.Subnet, p.Attrs.PublicIP)
	return st, nil
}

// Observe finds the TUN as it is (backend.Observer).
func (u *Userspace) Observe(own lease.Lease) ([]string, error) {
	u.own = own
	found, err := u.eng.Observe()
	if err != nil || found {
		return nil, err
	}
	return []string{DeviceName}, nil
}

// ForgetPeer drops a peer whose lease is gone from the engine's table.
func (u *Userspace) ForgetPeer(key string) { u.eng.ForgetPeer(key) }

// Links returns the TUN's index.
func (u *Userspace) Links() []int {
	if i := u.eng.Index(); i > 0 {
		return []int{i}
	}
	return nil
}

// DataPathStats returns the encapsulation and the data path's counters.
func (u *Userspace) DataPathStats() (string, *tunnel.Stats) { return Name, u.eng.Stats() }

// Close stops the data path; the TUN, its address and its routes stay.
func (u *Userspace) Close() error { return u.eng.Close() }
