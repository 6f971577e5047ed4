//go:build linux

// Package ipip is the ipip backend (seed 004): IPv4 in IPv4, IP protocol 4,
// the inner packet right after the outer IPv4 header. flannel's kernel state:
// a device flannel.ipip holding <own subnet>.0/32, MTU external - 20, up, and
// per peer the route <peer subnet> via <peer PublicIP> dev flannel.ipip
// onlink; with DirectRouting a peer on a directly connected subnet gets
// <peer subnet> via <PublicIP> dev <external> instead. The lease has
// BackendType ipip and no BackendData. IPv4 only, as flannel's.
//
// Two data paths, with the same kernel state and the same wire format, so
// that a node on either talks to the other and to flannel's ipip nodes:
//   - kernel: flannel.ipip is a kernel ipip device (local = the public
//     address, no remote), where the kernel has the ipip module;
//   - userspace: flannel.ipip is a TUN served by weft's userspace tunnel
//     engine (package tunnel) with its ipip encapsulation, a raw socket for
//     protocol 4, where it has not (this project's test machines). Packets
//     from non-peers and inner sources outside the sending peer's subnet are
//     dropped and counted, as with udp.
//
// The path is chosen when the backend is built: --ipip-path=kernel or
// userspace forces one; auto (the default) keeps an existing kernel ipip
// device or TUN, and otherwise creates the kernel device, falling back to
// userspace when the kernel cannot make one. The routes are peer objects of
// the one reconciler in both paths.
package ipip

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/kernel"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/reconcile"
)

// Name is the backend type.
const Name = "ipip"

// DeviceName is flannel's ipip device.
const DeviceName = "flannel.ipip"

// Overhead is the outer IPv4 header.
const Overhead = 20

// The data paths (--ipip-path).
const (
	PathAuto      = backend.PathAuto
	PathKernel    = backend.PathKernel
	PathUserspace = backend.PathUserspace
)

// Options are the ipip backend's net-conf.json options.
type Options struct {
	DirectRouting bool // plain routes to peers on a directly connected subnet
}

// ParseOptions reads the options of c.Backend; a network with IPv6 is an
// error (ipip carries IPv4 only).
func ParseOptions(c *config.NetConf) (Options, []string, error) {
	var o Options
	w, err := c.Backend.ReadOptions([]config.Option{config.BoolOption("DirectRouting", &o.DirectRouting)})
	if err == nil && c.IPv6.Enabled {
		err = fmt.Errorf("%w: Backend.Type ipip carries IPv4 only (as flannel's), but EnableIPv6 is true; use vxlan or wireguard for IPv6", config.ErrNetConf)
	}
	return o, w, err
}

// Type is the ipip backend type for the registry.
func Type() backend.Type {
	return backend.Type{
		Name:     Name,
		Validate: backend.Validator(ParseOptions),
		New:      New,
		Settings: newSettings,
	}
}

// New is the backend.Factory: it chooses the data path (see the package
// documentation) and logs the choice.
func New(d backend.Deps) (backend.Backend, error) {
	k := d.Kernel
	opts, _, err := ParseOptions(d.Net)
	if err != nil {
		return nil, err
	}
	if !d.External.PublicIP.Is4() {
		return nil, fmt.Errorf("ipip needs a public IPv4 address on %s (or --public-ip)", d.External.Name)
	}
	path := backend.SettingsOf(d, NewSettings).Path
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	b := base{d: d, opts: opts}
	log := d.Logger
	switch path {
	case PathKernel:
		log.Info("ipip data path", "path", PathKernel, "reason", "--ipip-path=kernel")
		return &Kernel{base: b}, nil
	case PathUserspace:
		log.Info("ipip data path", "path", PathUserspace, "reason", "--ipip-path=userspace")
		return newUserspace(b), nil
	case PathAuto, "":
	default:
		return nil, fmt.Errorf("--ipip-path %q: want %s, %s or %s", path, PathAuto, PathKernel, PathUserspace)
	}
	kern := &Kernel{base: b}
	switch l, err := k.LinkByName(DeviceName); {
	case err == nil && l.Kind == kernel.KindIPIP:
		log.Info("ipip data path", "path", PathKernel, "reason", "a kernel ipip device "+DeviceName+" exists")
		return kern, nil
	case err == nil && l.Kind == kernel.KindTUN:
		log.Info("ipip data path", "path", PathUserspace, "reason", "the userspace path's TUN "+DeviceName+
			" exists (delete it, or set --ipip-path=kernel, to switch)")
		return newUserspace(b), nil
	}
	if d.ReadOnly { // weft status: no device yet, and nothing may be made
		return kern, nil
	}
	err = kern.create()
	if err == nil {
		log.Info("ipip data path", "path", PathKernel, "reason", "the kernel made an ipip device")
		return kern, nil
	}
	if !noModule(err) {
		return nil, err
	}
	log.Info("ipip data path", "path", PathUserspace, "reason", "the kernel has no ipip support (no ipip module)", "err", err)
	return newUserspace(b), nil
}

// noModule reports whether creating an ipip device failed because the
// kernel has no ipip support.
func noModule(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.ENOENT)
}

// base is what both paths share: the lease and the routes.
type base struct {
	d    backend.Deps
	opts Options
	own  lease.Lease // of the last Ensure or Observe
}

// Attrs publishes the type and no data.
func (b *base) Attrs() lease.Attrs {
	return lease.Attrs{PublicIP: b.d.External.PublicIP, BackendType: Name}
}

// route is a peer's route: via its public address on the device (onlink),
// or on the external interface with DirectRouting when it is directly
// connected.
func (b *base) route(own, p lease.Lease, index int) (reconcile.Objects, error) {
	if err := backend.PeerCheck(own, p, Name); err != nil {
		return reconcile.Objects{}, err
	}
	switch {
	case !p.Subnet.IsValid():
		return reconcile.Objects{}, fmt.Errorf("it has no IPv4 subnet")
	case !p.Attrs.PublicIP.Is4():
		return reconcile.Objects{}, fmt.Errorf("it has no public IPv4 address")
	case own.Subnet.IsValid() && p.Subnet.Overlaps(own.Subnet):
		return reconcile.Objects{}, fmt.Errorf("its subnet %s overlaps this node's %s", p.Subnet, own.Subnet)
	}
	ext := b.d.External
	if b.opts.DirectRouting && ext.DirectlyConnected(p.Attrs.PublicIP) {
		return reconcile.Objects{Routes: []kernel.Route{{Dst: p.Subnet, Gw: p.Attrs.PublicIP, LinkIndex: ext.Index}}}, nil
	}
	if index <= 0 {
		return reconcile.Objects{}, fmt.Errorf("%s does not exist yet", DeviceName)
	}
	return reconcile.Objects{Routes: []kernel.Route{{Dst: p.Subnet, Gw: p.Attrs.PublicIP, LinkIndex: index, OnLink: true}}}, nil
}

// Devices returns flannel.ipip with the MTU and <own subnet>.0/32.
func (b *base) Devices() []kernel.Device {
	d := kernel.Device{Name: DeviceName, MTU: b.MTU()}
	if a, err := ownAddr(b.own); err == nil {
		d.Addrs = []netip.Prefix{a}
	}
	return []kernel.Device{d}
}

// MTU is the external MTU minus the outer IPv4 header.
func (b *base) MTU() int { return b.d.External.MTU - Overhead }

func ownAddr(own lease.Lease) (netip.Prefix, error) {
	if !own.Subnet.IsValid() {
		return netip.Prefix{}, fmt.Errorf("the own lease %s has no IPv4 subnet", own.Key())
	}
	return netip.PrefixFrom(own.Subnet.Masked().Addr(), 32), nil
}
