//go:build linux

// Package wireguard is the wireguard backend, wire-compatible with
// flannel's: every node's pods reach the others' through WireGuard tunnels,
// one peer per node, on flannel-wg (and flannel-wg-v6 in Mode separate).
//
// flannel's kernel state: the device holds <own subnet>.0/32 (/128 for
// IPv6), MTU (Backend.MTU or the external MTU) - 80, is up, and has the
// route <Network> dev flannel-wg (and the IPv6 network's); each peer lease
// is a WireGuard peer with endpoint PublicIP:Port and AllowedIPs the peer's
// subnet(s). The lease's BackendData is {"PublicKey":"<base64>","Port":N}
// (BackendV6Data for IPv6). The private key lives in WIREGUARD_KEY_FILE,
// default /run/flannel/wgkey (config.Options.WireGuardKeyFile), mode 0400,
// created when missing.
//
// Two data paths, with the same kernel state and the same wire format (so
// that a node on either path and flannel's nodes form one mesh):
//   - kernel: the devices are kernel wireguard links, configured with wgctrl
//     over generic netlink, where the kernel has WireGuard;
//   - userspace: wireguard-go in process on a persistent TUN of the same
//     name (TSO/GRO and UDP GSO/GRO on), where it has not. wg(8) reaches it
//     on <--wireguard-socket-dir, default /var/run/wireguard>/<dev>.sock.
//
// The path is chosen when the backend is built, as ipip's: --wireguard-path
// =kernel or userspace forces one; auto (the default) keeps the kind of an
// existing device, and otherwise creates a kernel device, falling back to
// userspace when the kernel cannot make one.
//
// The peers are desired state (peerSync): set from the daemon's lease
// events, compared with the device after every change, every wg command
// on a userspace device, and every 500 ms (5 s on userspace),
// restored when removed or changed by hand, and removed when their lease
// goes; peers no lease wants are removed once every lease is listed. The
// routes are the reconciler's (NodeRoutes).
package wireguard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/kernel"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/reconcile"
)

// The data paths (--wireguard-path).
const (
	PathAuto      = backend.PathAuto
	PathKernel    = backend.PathKernel
	PathUserspace = backend.PathUserspace
)

// syncInterval is how often the peers are compared with kernel devices (a
// peer removed by hand with wg is back within it: the kernel sends no
// notice of WireGuard changes). A userspace device changes only through
// its control socket, which triggers a comparison after every command, so
// its periodic one is only a safety net, kept rare because reading 5,000
// peers costs milliseconds.
const (
	syncInterval          = 500 * time.Millisecond
	userspaceSyncInterval = 5 * time.Second
)

// datapath is one of the two paths.
type datapath interface {
	control
	// ensure makes the device name exist (running, for userspace).
	ensure(name string, mtu int) error
	String() string
	Close() error
}

// dev is one of the backend's devices and the families it carries.
type dev struct {
	name   string
	port   int
	v4, v6 bool
}

// WireGuard is the backend.
type WireGuard struct {
	d    backend.Deps
	o    Options
	k    kernel.Kernel
	path datapath
	devs []dev
	priv secret
	ps   *peerSync

	mu      sync.Mutex
	own     lease.Lease // of the last Ensure or Observe
	indices map[string]int
	stop    context.CancelFunc
	done    sync.WaitGroup
}

var (
	_ backend.Backend       = (*WireGuard)(nil)
	_ backend.PeerForgetter = (*WireGuard)(nil)
	_ backend.PeerPruner    = (*WireGuard)(nil)
	_ backend.NodeRouter    = (*WireGuard)(nil)
	_ backend.Observer      = (*WireGuard)(nil)
	_ backend.PeerDiffer    = (*WireGuard)(nil)
	_ backend.PeerSyncer    = (*WireGuard)(nil)
)

// New is the backend.Factory.
func New(d backend.Deps) (backend.Backend, error) {
	return newWith(d, nil)
}

// newWith builds the backend; path, when not nil, is the data path to use (a
// test's fake), else it is chosen as the package documentation says.
func newWith(d backend.Deps, path datapath) (*WireGuard, error) {
	o, _, err := ParseOptions(d.Net)
	if err != nil {
		return nil, err
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	devs, err := devices(d, o)
	if err != nil {
		return nil, err
	}
	psk, err := parsePSK(o.PSK)
	if err != nil {
		return nil, err
	}
	b := &WireGuard{d: d, o: o, k: d.Kernel, devs: devs, indices: map[string]int{}}
	keyFile := DefaultKeyFile
	if d.Options != nil && d.Options.WireGuardKeyFile != "" {
		keyFile = d.Options.WireGuardKeyFile
	}
	if d.ReadOnly {
		b.priv, _ = readKeyOnly(keyFile)
	} else {
		var created bool
		if b.priv, created, err = loadKey(keyFile); err != nil {
			return nil, err
		}
		d.Logger.Info("wireguard key", "file", keyFile, "created", created, "public-key", b.priv.public().String())
	}
	if path == nil {
		if path, err = b.choosePath(); err != nil {
			return nil, err
		}
	}
	b.path = path
	ports := map[string]int{}
	for _, v := range devs {
		ports[v.name] = v.port
	}
	b.ps = newPeerSync(path, d.Logger, b.priv, psk, time.Duration(o.PersistentKeepaliveInterval)*time.Second, ports)
	if u, ok := path.(*userspace); ok {
		u.changed = b.ps.poke
	}
	return b, nil
}

// readKeyOnly reads the key file for weft status, which creates nothing.
func readKeyOnly(path string) (secret, error) {
	if _, err := os.Stat(path); err != nil {
		return secret{}, fmt.Errorf("wireguard key file %s: %w", path, err)
	}
	k, _, err := loadKey(path)
	return k, err
}

// devices are flannel's devices for the Mode and the enabled families.
func devices(d backend.Deps, o Options) ([]dev, error) {
	v4, v6 := d.Net.IPv4.Enabled, d.Net.IPv6.Enabled
	ext := d.External
	if o.Mode == ModeSeparate {
		var out []dev
		if v4 {
			if !ext.PublicIP.Is4() {
				return nil, fmt.Errorf("wireguard needs a public IPv4 address on %s (or --public-ip)", ext.Name)
			}
			out = append(out, dev{name: DeviceName, port: o.ListenPort, v4: true})
		}
		if v6 {
			if !ext.PublicIPv6.Is6() {
				return nil, fmt.Errorf("wireguard needs a public IPv6 address on %s (or --public-ipv6) for EnableIPv6 in Mode separate", ext.Name)
			}
			out = append(out, dev{name: DeviceNameV6, port: o.ListenPortV6, v6: true})
		}
		return out, nil
	}
	switch {
	case o.Mode == ModeIPv4 && !ext.PublicIP.Is4():
		return nil, fmt.Errorf("wireguard Mode ipv4 needs a public IPv4 address on %s (or --public-ip)", ext.Name)
	case o.Mode == ModeIPv6 && !ext.PublicIPv6.Is6():
		return nil, fmt.Errorf("wireguard Mode ipv6 needs a public IPv6 address on %s (or --public-ipv6)", ext.Name)
	case o.Mode == ModeAuto && !ext.PublicIP.Is4() && !ext.PublicIPv6.Is6():
		return nil, fmt.Errorf("wireguard needs a public address on %s (or --public-ip)", ext.Name)
	}
	return []dev{{name: DeviceName, port: o.ListenPort, v4: v4, v6: v6}}, nil
}

// choosePath picks the data path (see the package documentation).
func (b *WireGuard) choosePath() (datapath, error) {
	log := b.d.Logger
	set := backend.SettingsOf(b.d, NewSettings)
	sockDir, choice := set.SocketDir, set.Path
	user := func(reason string, attrs ...any) (datapath, error) {
		log.Info("wireguard data path", append([]any{"path", PathUserspace, "reason", reason}, attrs...)...)
		return newUserspace(log, sockDir), nil
	}
	kern := func(reason string) (datapath, error) {
		log.Info("wireguard data path", "path", PathKernel, "reason", reason)
		return newKernel(b.k)
	}
	switch choice {
	case PathKernel:
		return kern("--wireguard-path=kernel")
	case PathUserspace:
		return user("--wireguard-path=userspace")
	case PathAuto, "":
	default:
		return nil, fmt.Errorf("--wireguard-path %q: want %s, %s or %s", choice, PathAuto, PathKernel, PathUserspace)
	}
	name := b.devs[0].name
	switch l, err := b.k.LinkByName(name); {
	case err == nil && l.Kind == kernel.KindWireGuard:
		return kern("a kernel wireguard device " + name + " exists")
	case err == nil && l.Kind == kernel.KindTUN:
		return user("the userspace path's TUN " + name + " exists (delete it, or set --wireguard-path=kernel, to switch)")
	}
	if b.d.ReadOnly { // weft status: no device yet, and nothing may be made
		return kern("no device yet")
	}
	probe := &kernelPath{k: b.k}
	err := probe.create(name, b.MTU())
	if err == nil {
		return kern("the kernel made a wireguard device")
	}
	if !noModule(err) {
		return nil, err
	}
	return user("the kernel has no WireGuard (no wireguard module)", "err", err)
}

// Attrs publishes the public key and port of each family's device.
func (b *WireGuard) Attrs(context.Context) (lease.Attrs, error) {
	a := lease.Attrs{PublicIP: b.d.External.PublicIP, PublicIPv6: b.d.External.PublicIPv6, BackendType: Name}
	pub := b.priv.public().String()
	for _, v := range b.devs {
		data, err := json.Marshal(leaseData{PublicKey: pub, Port: v.port})
		if err != nil {
			return lease.Attrs{}, fmt.Errorf("encode wireguard data: %w", err)
		}
		if v.v4 {
			a.BackendData = data
		}
		if v.v6 {
			a.BackendV6Data = data
		}
	}
	return a, nil
}

// Ensure makes every device exist and starts keeping the peers (Devices
// gives the devices' MTU and addresses to the reconciler).
func (b *WireGuard) Ensure(ctx context.Context, own lease.Lease) error {
	for _, v := range b.devs {
		if _, err := b.addrs(v, own); err != nil {
			return err
		}
		if err := b.path.ensure(v.name, b.MTU()); err != nil {
			return err
		}
		link, err := b.k.LinkByName(v.name)
		if err != nil {
			return fmt.Errorf("find %s: %w", v.name, err)
		}
		b.mu.Lock()
		b.indices[v.name] = link.Index
		b.own = own
		b.mu.Unlock()
	}
	b.mu.Lock()
	if b.stop == nil {
		// The peers are kept for the backend's life, not one call's.
		runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		b.stop = cancel
		_, user := b.path.(*userspace)
		every := syncInterval
		if user {
			every = userspaceSyncInterval
		}
		b.done.Add(1)
		go func() {
			defer b.done.Done()
			b.ps.run(runCtx, every)
		}()
		if user {
			b.done.Add(1)
			go func() {
				defer b.done.Done()
				trimMemory(runCtx, b.d.Logger)
			}()
		}
	}
	b.mu.Unlock()
	b.ps.poke()
	return nil
}

// Peer records the peer's WireGuard peers as desired; the backend wants no
// kernel object per peer (the network routes are NodeRoutes'). A lease that
// cannot be used is dropped.
func (b *WireGuard) Peer(own lease.Lease, p lease.Lease) (reconcile.Objects, error) {
	specs, err := b.peerSpecs(own, p)
	if err != nil {
		b.ps.forget(p.Key())
		return reconcile.Objects{}, err
	}
	b.ps.set(p.Key(), specs)
	return reconcile.Objects{}, nil
}

// peerSpecs computes a lease's peer on each device.
func (b *WireGuard) peerSpecs(own, p lease.Lease) (map[string]peerSpec, error) {
	if err := backend.PeerCheck(own, p, Name); err != nil {
		return nil, err
	}
	type fam struct {
		subnet, ownSubnet netip.Prefix
		ip                netip.Addr
		data              []byte
		field, ipName     string
	}
	v4 := fam{p.Subnet, own.Subnet, p.Attrs.PublicIP, p.Attrs.BackendData, "BackendData", "IPv4"}
	v6 := fam{p.IPv6Subnet, own.IPv6Subnet, p.Attrs.PublicIPv6, p.Attrs.BackendV6Data, "BackendV6Data", "IPv6"}
	check := func(f fam, needIP bool) (wgtypes.Key, int, error) {
		switch {
		case !f.subnet.IsValid():
			return wgtypes.Key{}, 0, fmt.Errorf("it has no %s subnet", f.ipName)
		case f.ownSubnet.IsValid() && f.subnet.Overlaps(f.ownSubnet):
			return wgtypes.Key{}, 0, fmt.Errorf("its subnet %s overlaps this node's %s", f.subnet, f.ownSubnet)
		case needIP && (!f.ip.IsValid() || f.ip.Is4() != (f.ipName == "IPv4")):
			return wgtypes.Key{}, 0, fmt.Errorf("it has no public %s address", f.ipName)
		}
		return parseLeaseData(f.data, f.field)
	}
	out := map[string]peerSpec{}
	if b.o.Mode == ModeSeparate {
		for _, v := range b.devs {
			f := v4
			if v.v6 {
				f = v6
			}
			key, port, err := check(f, true)
			if err != nil {
				return nil, err
			}
			if port == 0 { // flannel's lease: its port is ours
				port = v.port
			}
			out[v.name] = peerSpec{key: key, endpoint: netip.AddrPortFrom(f.ip, uint16(port)), allowed: []netip.Prefix{f.subnet.Masked()}}
		}
		return out, nil
	}
	v := b.devs[0]
	var spec peerSpec
	var keyFam *fam
	for _, f := range []struct {
		on bool
		f  *fam
	}{{v.v4, &v4}, {v.v6, &v6}} {
		if !f.on {
			continue
		}
		key, port, err := check(*f.f, false)
		if err != nil {
			return nil, err
		}
		if keyFam == nil {
			keyFam, spec.key = f.f, key
			if port == 0 {
				port = v.port
			}
			spec.endpoint = netip.AddrPortFrom(netip.Addr{}, uint16(port))
		}
		spec.allowed = append(spec.allowed, f.f.subnet.Masked())
	}
	ip, err := b.endpointIP(p)
	if err != nil {
		return nil, err
	}
	spec.endpoint = netip.AddrPortFrom(ip, spec.endpoint.Port())
	spec.allowed = sortedPrefixes(spec.allowed)
	out[v.name] = spec
	return out, nil
}

// endpointIP picks a peer's address in the one-device Modes: ipv4 and ipv6
// name the family; auto takes flannel's choice (IPv4 when the peer has it,
// unless the peer's IPv4 address is private while both ends have public
// IPv6 addresses).
func (b *WireGuard) endpointIP(p lease.Lease) (netip.Addr, error) {
	ip4, ip6 := p.Attrs.PublicIP, p.Attrs.PublicIPv6
	has4, has6 := ip4.Is4(), ip6.Is6()
	switch b.o.Mode {
	case ModeIPv4:
		if !has4 {
			return netip.Addr{}, fmt.Errorf("it has no public IPv4 address (Mode ipv4)")
		}
		return ip4, nil
	case ModeIPv6:
		if !has6 {
			return netip.Addr{}, fmt.Errorf("it has no public IPv6 address (Mode ipv6)")
		}
		return ip6, nil
	}
	own6 := b.d.External.PublicIPv6
	switch {
	case has4 && !has6:
		return ip4, nil
	case has6 && !has4:
		return ip6, nil
	case !has4 && !has6:
		return netip.Addr{}, fmt.Errorf("it has no public address")
	case !ip4.IsPrivate() && b.d.External.PublicIP.IsValid():
		return ip4, nil
	case !ip6.IsPrivate() && own6.IsValid() && !own6.IsPrivate():
		return ip6, nil
	}
	return ip4, nil
}

// ForgetPeer drops a peer whose lease is gone.
func (b *WireGuard) ForgetPeer(key string) { b.ps.forget(key) }

// PrunePeers lets the backend remove the peers no lease wants (every lease
// is now known).
func (b *WireGuard) PrunePeers() { b.ps.prune() }

// NodeRoutes are <Network> dev flannel-wg and the IPv6 network's route
// (backend.NodeRouter); none for a device not made yet.
func (b *WireGuard) NodeRoutes() []kernel.Route {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []kernel.Route
	for _, v := range b.devs {
		i := b.indices[v.name]
		if i <= 0 {
			continue
		}
		if v.v4 {
			out = append(out, kernel.Route{Dst: b.d.Net.IPv4.Network.Masked(), LinkIndex: i})
		}
		if v.v6 {
			out = append(out, kernel.Route{Dst: b.d.Net.IPv6.Network.Masked(), LinkIndex: i})
		}
	}
	return out
}

// Links returns the devices' indices.
func (b *WireGuard) Links() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []int
	for _, v := range b.devs {
		if i := b.indices[v.name]; i > 0 {
			out = append(out, i)
		}
	}
	return out
}

// Devices returns each device with the MTU and its addresses.
func (b *WireGuard) Devices() []kernel.Device {
	b.mu.Lock()
	own := b.own
	b.mu.Unlock()
	out := make([]kernel.Device, len(b.devs))
	for i, v := range b.devs {
		out[i] = kernel.Device{Name: v.name, MTU: b.MTU()}
		out[i].Addrs, _ = b.addrs(v, own) // none before the first Ensure
	}
	return out
}

// addrs are a device's addresses: the own subnets' first, /32 and /128.
func (b *WireGuard) addrs(v dev, own lease.Lease) ([]netip.Prefix, error) {
	var addrs []netip.Prefix
	if v.v4 {
		if !own.Subnet.IsValid() {
			return nil, fmt.Errorf("the own lease %s has no IPv4 subnet", own.Key())
		}
		addrs = append(addrs, netip.PrefixFrom(own.Subnet.Masked().Addr(), 32))
	}
	if v.v6 {
		if !own.IPv6Subnet.IsValid() {
			return nil, fmt.Errorf("the own lease %s has no IPv6 subnet", own.Key())
		}
		addrs = append(addrs, netip.PrefixFrom(own.IPv6Subnet.Masked().Addr(), 128))
	}
	return addrs, nil
}

// MTU is Backend.MTU, or the external MTU, less WireGuard's overhead.
func (b *WireGuard) MTU() int {
	if b.o.MTU > 0 {
		return b.o.MTU - Overhead
	}
	return b.d.External.MTU - Overhead
}

// Observe finds the devices as they are (backend.Observer).
func (b *WireGuard) Observe(own lease.Lease) ([]string, error) {
	b.mu.Lock()
	b.own = own
	b.mu.Unlock()
	var missing []string
	for _, v := range b.devs {
		l, err := b.k.LinkByName(v.name)
		if err != nil {
			if errors.Is(err, kernel.ErrLinkNotFound) {
				missing = append(missing, v.name)
				continue
			}
			return nil, fmt.Errorf("look up %s: %w", v.name, err)
		}
		b.mu.Lock()
		b.indices[v.name] = l.Index
		b.mu.Unlock()
	}
	return missing, nil
}

// SyncPeers asks the peer loop for a check now (backend.PeerSyncer).
func (b *WireGuard) SyncPeers() { b.ps.poke() }

// DiffPeers names how the devices' peers differ from the leases
// (backend.PeerDiffer).
func (b *WireGuard) DiffPeers() ([]string, error) { return b.ps.diff() }

// Close stops keeping the peers and, on the userspace path, wireguard-go;
// the devices, their addresses and routes stay.
func (b *WireGuard) Close() error {
	b.mu.Lock()
	stop := b.stop
	b.mu.Unlock()
	if stop != nil {
		stop()
	}
	b.done.Wait()
	return b.path.Close()
}
