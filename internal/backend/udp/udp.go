//go:build linux

// Package udp is the udp backend: flannel's wire format (every IPv4 packet
// whole as the payload of one UDP datagram to the peer's PublicIP, port 8285
// by default) through a TUN device flannel0 holding <subnet>.0/32, with the
// route <Network> dev flannel0, MTU external - 28, and no BackendData. The
// data path is the userspace tunnel engine (package tunnel) with its udp
// encapsulation; the route is the reconciler's (NodeRoutes). IPv4 only,
// like flannel's udp backend.
package udp

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/backend/tunnel"
	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/kernel"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/reconcile"
)

// Name is the backend type.
const Name = "udp"

// Type is the udp backend type for the registry.
func Type() backend.Type {
	return backend.Type{
		Name:     Name,
		Validate: backend.Validator(ParseNetConfOptions),
		New:      New,
		Settings: func() config.FlagAdder { return NewSettings() },
	}
}

// Settings are the udp type's node settings, weftd flags (Type.Settings).
type Settings struct {
	// Tuning turns steps of the data path off, for measurements
	// (--udp-tuning, tunnel.Options.Set); weftd runs with all of them.
	Tuning tunnel.Options
}

// NewSettings returns the defaults: every step of the data path on.
func NewSettings() *Settings { return &Settings{} }

// AddFlags implements config.FlagAdder.
func (s *Settings) AddFlags(fs *flag.FlagSet) {
	fs.Var(&s.Tuning, "udp-tuning",
		"turn steps of the udp data path off, for measurements only: queues=N,batch=N,novnet,nogso,nogro,nomerge")
}

// NetConfOptions are the udp backend's net-conf.json options.
type NetConfOptions struct {
	Port int // default 8285
}

// ParseNetConfOptions reads the options of c.Backend with their defaults.
func ParseNetConfOptions(c *config.NetConf) (NetConfOptions, []string, error) {
	o := NetConfOptions{Port: 8285}
	w, err := c.Backend.ReadOptions([]config.Option{config.IntOption("Port", &o.Port, 1, 65535)})
	return o, w, err
}

// DeviceName is flannel's TUN device.
const DeviceName = "flannel0"

// Overhead is an IPv4 and a UDP header.
const Overhead = 28

// UDP is the backend.
type UDP struct {
	d   backend.Deps
	eng *tunnel.Engine
	own lease.Lease // of the last Ensure or Observe
}

var (
	_ backend.Backend       = (*UDP)(nil)
	_ backend.PeerForgetter = (*UDP)(nil)
	_ backend.NodeRouter    = (*UDP)(nil)
	_ io.Closer             = (*UDP)(nil)
)

// New is the backend.Factory. --udp-tuning (Settings) turns data-path
// steps off for measurements; weftd runs with all of them.
func New(d backend.Deps) (backend.Backend, error) {
	return NewWithOptions(d, backend.SettingsOf(d, NewSettings).Tuning)
}

// NewWithOptions builds the backend with data-path options.
func NewWithOptions(d backend.Deps, o tunnel.Options) (*UDP, error) {
	if d.Net.IPv6.Enabled {
		return nil, fmt.Errorf("the udp backend carries IPv4 only (as flannel's); use vxlan or wireguard for IPv6")
	}
	if !d.External.PublicIP.IsValid() {
		return nil, fmt.Errorf("udp needs a public IPv4 address on %s (or --public-ip)", d.External.Name)
	}
	nco, _, err := ParseNetConfOptions(d.Net)
	if err != nil {
		return nil, err
	}
	enc := tunnel.UDP(nco.Port)
	return &UDP{d: d, eng: tunnel.New(tunnel.Config{Device: DeviceName, Encap: enc, Options: o, Local: d.External.PublicIP,
		Network: d.Net.IPv4.Network, MTU: d.External.MTU - enc.Overhead, Kernel: d.Kernel, Logger: d.Logger})}, nil
}

// Attrs publishes the type and no data. flannel's udp lease has no
// BackendType at all; weft's carries "udp" (flannel ignores the field), and
// weft reads a lease without one as a udp peer (peerCheck).
func (u *UDP) Attrs(context.Context) (lease.Attrs, error) {
	return lease.Attrs{PublicIP: u.d.External.PublicIP, BackendType: Name}, nil
}

// Peer records the peer in the data path's table and wants no kernel object
// of its own (the one route, <Network> dev flannel0, is NodeRoutes'). A
// lease that cannot be used is dropped from the table.
func (u *UDP) Peer(own lease.Lease, p lease.Lease) (reconcile.Objects, error) {
	if err := u.peerCheck(own, p); err != nil {
		u.ForgetPeer(p.Key())
		return reconcile.Objects{}, err
	}
	u.eng.SetPeer(p.Key(), p.Subnet, p.Attrs.PublicIP)
	return reconcile.Objects{}, nil
}

func (u *UDP) peerCheck(own, p lease.Lease) error {
	// flannel's udp backend publishes no BackendType: its lease value is
	// exactly {"PublicIP":"10.254.0.2","PublicIPv6":null}. On a udp network
	// such a lease is a udp peer (on any other network the daemon ignores it
	// through backend.PeerCheck, logged once).
	if p.Attrs.BackendType == "" {
		p.Attrs.BackendType = Name
	}
	if err := backend.PeerCheck(own, p, Name); err != nil {
		return err
	}
	switch {
	case !p.Subnet.IsValid():
		return fmt.Errorf("it has no IPv4 subnet")
	case !p.Attrs.PublicIP.Is4():
		return fmt.Errorf("it has no public IPv4 address")
	case own.Subnet.IsValid() && p.Subnet.Overlaps(own.Subnet):
		return fmt.Errorf("its subnet %s overlaps this node's %s", p.Subnet, own.Subnet)
	}
	return nil
}

// ForgetPeer drops a peer whose lease is gone.
func (u *UDP) ForgetPeer(key string) { u.eng.ForgetPeer(key) }

// Ensure makes flannel0 and runs the data path (tunnel.Engine.Ensure).
func (u *UDP) Ensure(ctx context.Context, own lease.Lease) error {
	u.own = own
	return u.eng.Ensure(ctx, own.Subnet)
}

// Observe finds flannel0 as it is (backend.Observer).
func (u *UDP) Observe(own lease.Lease) ([]string, error) {
	u.own = own
	found, err := u.eng.Observe()
	if err != nil || found {
		return nil, err
	}
	return []string{DeviceName}, nil
}

// Close stops the data path; flannel0, its address and its route stay.
func (u *UDP) Close() error { return u.eng.Close() }

// DataPathStats returns the encapsulation and the data path's counters.
func (u *UDP) DataPathStats() (string, *tunnel.Stats) { return Name, u.eng.Stats() }

// Links returns flannel0's index.
func (u *UDP) Links() []int {
	if i := u.eng.Index(); i > 0 {
		return []int{i}
	}
	return nil
}

// NodeRoutes is the route <Network> dev flannel0 that sends the pods'
// traffic for other nodes into the data path (backend.NodeRouter); none
// before Ensure made the device.
func (u *UDP) NodeRoutes() []kernel.Route {
	i := u.eng.Index()
	if i <= 0 {
		return nil
	}
	return []kernel.Route{{Dst: u.d.Net.IPv4.Network.Masked(), LinkIndex: i}}
}

// Devices returns flannel0 with the MTU and <own subnet>.0/32.
func (u *UDP) Devices() []kernel.Device { return []kernel.Device{u.eng.Device(u.own.Subnet)} }

// MTU is the external MTU minus the IPv4 and UDP headers.
func (u *UDP) MTU() int { return u.d.External.MTU - Overhead }
