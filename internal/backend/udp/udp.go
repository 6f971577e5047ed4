// Package udp is the udp backend: flannel's wire format (every IPv4 packet
// whole as the payload of one UDP datagram to the peer's PublicIP, port 8285
// by default) through a TUN device flannel0 holding <subnet>.0/32, with the
// route <Network> dev flannel0, MTU external - 28, and no BackendData.
//
// Design notes:
//   - The data path runs in weftd as goroutines over a persistent
//     (TUNSETPERSIST) multi-queue TUN: when weftd dies the device, its
//     address and its route stay, and the next weftd re-attaches within
//     milliseconds of starting, so a restart costs only the packets sent while
//     no process was there.
//   - Per-peer state is userspace only: a copy-on-write table (subnet ->
//     endpoint for sending, endpoint -> subnet for checking) that workers
//     read with one atomic load, updated from Peer and ForgetPeer without
//     stopping traffic. The only kernel route is <Network> dev flannel0,
//     installed by Ensure; it is not in the reconciler's scope (it is as long
//     as the network, not inside it).
//   - Speed, as in wireguard-go: the TUN is opened with IFF_VNET_HDR and TSO
//     (and USO) offloads, so one read is up to 64 KiB of one flow; it is cut
//     into wire-sized packets in userspace (flannel's peers expect one packet
//     per datagram) and sent with one UDP_SEGMENT sendmsg. Received datagrams
//     come in recvmmsg batches with UDP GRO, and consecutive TCP segments of
//     a flow are merged back into one GSO packet for the TUN. A TX and an RX
//     worker run per TUN queue, one queue per CPU.
//   - Security flannel lacks: a datagram whose source is not a peer's
//     PublicIP and port is dropped, and so is an inner packet whose source
//     is outside that peer's subnet or whose destination is outside ours;
//     the counters are logged when they change.
//   - A packet for an address of the network that no peer holds is answered
//     with ICMP host unreachable (rate-limited), not dropped silently.
//   - IPv4 only, like flannel's udp backend.
package udp

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/reconcile"
)

// Name is the backend type.
const Name = "udp"

// Type is the udp backend type for the registry.
func Type() backend.Type {
	return backend.Type{
		Name: Name,
		Validate: func(c *config.NetConf) ([]string, error) {
			_, w, err := ParseNetConfOptions(c)
			return w, err
		},
		New:     New,
		Devices: []string{DeviceName},
	}
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

// Options tune the data path (tests and benchmarks turn steps off).
type Options struct {
	Queues  int  // TUN queues and worker pairs; 0: one per CPU, at most 4
	Batch   int  // datagrams per recvmmsg; 0: 32
	NoVnet  bool // no IFF_VNET_HDR/TSO: one packet per TUN read
	NoGSO   bool // one sendmsg per datagram
	NoGRO   bool // no UDP_GRO on the socket
	NoMerge bool // write received packets to the TUN one by one
}

// UDP is the backend.
type UDP struct {
	d     backend.Deps
	o     Options
	port  int
	mtu   int
	log   *slog.Logger
	peers *table
	stats Stats

	mu    sync.Mutex // guards the fields below
	conn  *conn
	dp    *datapath
	index int
	stop  context.CancelFunc // ends the stats reporter
}

var (
	_ backend.Backend       = (*UDP)(nil)
	_ backend.PeerForgetter = (*UDP)(nil)
	_ io.Closer             = (*UDP)(nil)
)

// New is the backend.Factory. WEFT_UDP_DATAPATH (see ParseOptions) turns
// data-path steps off for measurements; weftd runs with all of them.
func New(d backend.Deps) (backend.Backend, error) {
	o, err := ParseOptions(d.Getenv("WEFT_UDP_DATAPATH"))
	if err != nil {
		return nil, fmt.Errorf("WEFT_UDP_DATAPATH: %w", err)
	}
	return NewWithOptions(d, o)
}

// ParseOptions reads a comma-separated list: queues=N, batch=N, novnet,
// nogso, nogro, nomerge.
func ParseOptions(s string) (Options, error) {
	var o Options
	for _, f := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(f), "=")
		var err error
		switch k {
		case "":
		case "queues":
			o.Queues, err = strconv.Atoi(v)
		case "batch":
			o.Batch, err = strconv.Atoi(v)
		case "novnet":
			o.NoVnet = true
		case "nogso":
			o.NoGSO = true
		case "nogro":
			o.NoGRO = true
		case "nomerge":
			o.NoMerge = true
		default:
			return Options{}, fmt.Errorf("unknown data-path option %q", k)
		}
		if err != nil {
			return Options{}, fmt.Errorf("%s: %w", f, err)
		}
	}
	return o, nil
}

// NewWithOptions builds the backend with data-path options.
func NewWithOptions(d backend.Deps, o Options) (*UDP, error) {
	if d.Net.IPv6.Enabled {
		return nil, fmt.Errorf("the udp backend carries IPv4 only (as flannel's); use vxlan or wireguard for IPv6")
	}
	if !d.External.PublicIP.IsValid() {
		return nil, fmt.Errorf("udp needs a public IPv4 address on %s (or --public-ip)", d.External.Name)
	}
	if o.Queues <= 0 {
		o.Queues = min(runtime.NumCPU(), 4)
	}
	if o.Batch <= 0 {
		o.Batch = 32
	}
	nco, _, err := ParseNetConfOptions(d.Net)
	if err != nil {
		return nil, err
	}
	port := nco.Port
	log := d.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &UDP{d: d, o: o, port: port, mtu: d.External.MTU - Overhead, log: log, peers: newTable()}, nil
}

// Attrs publishes the type and no data. flannel's udp lease has no
// BackendType at all; weft's carries "udp" (flannel ignores the field), and
// weft reads a lease without one as a udp peer (peerCheck).
func (u *UDP) Attrs(context.Context) (lease.Attrs, error) {
	return lease.Attrs{PublicIP: u.d.External.PublicIP, BackendType: Name}, nil
}

// Peer records the peer in the data path's table and wants no kernel object
// (the one route, <Network> dev flannel0, belongs to Ensure). A lease that
// cannot be used is dropped from the table.
func (u *UDP) Peer(own lease.Lease, p lease.Lease) (reconcile.Objects, error) {
	if err := u.peerCheck(own, p); err != nil {
		u.ForgetPeer(p.Key())
		return reconcile.Objects{}, err
	}
	if u.peers.set(peer{key: p.Key(), subnet: p.Subnet.Masked(), endpoint: addrPort(p.Attrs.PublicIP, u.port)}) {
		u.log.Debug("peer set", "lease", p.Key(), "endpoint", p.Attrs.PublicIP)
	}
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
func (u *UDP) ForgetPeer(key string) {
	if u.peers.remove(key) {
		u.log.Debug("peer removed", "lease", key)
	}
}

// Stats returns the data path's counters.
func (u *UDP) Stats() *Stats { return &u.stats }

// Links returns flannel0's index.
func (u *UDP) Links() []int {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.index > 0 {
		return []int{u.index}
	}
	return nil
}

// NodeRoutes is the route <Network> dev flannel0 that sends the pods'
// traffic for other nodes into the data path (backend.NodeRouter); none
// before Ensure made the device.
func (u *UDP) NodeRoutes() []reconcile.Route {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.index <= 0 {
		return nil
	}
	return []reconcile.Route{{Dst: u.d.Net.IPv4.Network.Masked(), LinkIndex: u.index}}
}

// Devices returns flannel0.
func (u *UDP) Devices() []string { return []string{DeviceName} }

// MTU is the external MTU minus the IPv4 and UDP headers.
func (u *UDP) MTU() int { return u.mtu }

func addrPort(a netip.Addr, port int) netip.AddrPort {
	return netip.AddrPortFrom(a.Unmap(), uint16(port))
}
