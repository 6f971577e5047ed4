//go:build linux

// Package tunnel is weft's userspace tunnel engine: a persistent multi-queue
// TUN device with virtio-net offloads, a peer table, and one socket of an
// encapsulation (Encap): udp (flannel's udp backend: each packet the payload
// of one UDP datagram) or ipip (IP protocol 4, the kernel's ipip wire
// format). The udp backend and the ipip backend's userspace path run on it.
//
// Design notes:
//   - The engine runs in weftd as goroutines over a persistent
//     (TUNSETPERSIST) multi-queue TUN: when weftd dies the device, its
//     address and its routes stay, and the next weftd re-attaches within
//     milliseconds of starting, so a restart costs only the packets sent
//     while no process was there.
//   - Per-peer state is userspace only: a copy-on-write table (subnet ->
//     endpoint for sending, endpoint -> subnet for checking) that workers
//     read with one atomic load, updated without stopping traffic.
//   - Speed, as in wireguard-go: the TUN is opened with IFF_VNET_HDR and TSO
//     (and USO) offloads, so one read is up to 64 KiB of one flow; it is cut
//     into wire-sized packets in userspace (the peers expect one packet per
//     datagram) and sent with one UDP_SEGMENT sendmsg (udp) or one sendmmsg
//     (ipip). Received packets come in recvmmsg batches (with UDP GRO for
//     udp), and consecutive TCP segments of a flow are merged back into one
//     GSO packet for the TUN. A TX worker runs per TUN queue, one queue per
//     CPU, and one RX worker reads the socket.
//   - Security: a packet whose outer source is not a peer's endpoint is
//     dropped, and so is an inner packet whose source is outside that
//     peer's subnet or whose destination is outside ours; the counters are
//     logged when they change.
//   - A packet for an address of the network that no peer holds is answered
//     with ICMP host unreachable (rate-limited), not dropped silently.
//   - IPv4 only.
package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/weft-net/weft/internal/kernel"
)

// Encap is an encapsulation: how the engine's packets travel between nodes.
type Encap struct {
	// Name is "udp" or "ipip" (logs).
	Name string
	// Overhead is the outer headers' size: the device's MTU is the
	// external MTU minus it.
	Overhead int
	port     int
	listen   func(local netip.Addr, o Options) (conn, error)
}

// UDP is flannel's udp encapsulation on port: an IPv4 and a UDP header.
func UDP(port int) Encap {
	return Encap{Name: "udp", Overhead: 28, port: port, listen: func(local netip.Addr, o Options) (conn, error) {
		return listenUDP(local, port, !o.NoGSO, !o.NoGRO)
	}}
}

// IPIP is IPv4 in IPv4 (IP protocol 4): an IPv4 header.
func IPIP() Encap {
	return Encap{Name: "ipip", Overhead: 20, listen: func(local netip.Addr, _ Options) (conn, error) {
		return listenIPIP(local)
	}}
}

// Endpoint is where a peer with public address a receives.
func (e Encap) Endpoint(a netip.Addr) netip.AddrPort {
	return netip.AddrPortFrom(a.Unmap(), uint16(e.port))
}

// Options tune the data path (tests and benchmarks turn steps off).
type Options struct {
	Queues  int  // TUN queues and TX workers; 0: one per CPU, at most 4
	Batch   int  // messages per recvmmsg; 0: 32
	NoVnet  bool // no IFF_VNET_HDR/TSO: one packet per TUN read
	NoGSO   bool // one sendmsg per udp datagram
	NoGRO   bool // no UDP_GRO on the udp socket
	NoMerge bool // write received packets to the TUN one by one
}

// Set implements flag.Value (weftd's --udp-tuning and --ipip-tuning): it
// replaces o with ParseOptions(s).
func (o *Options) Set(s string) error {
	v, err := ParseOptions(s)
	if err != nil {
		return err
	}
	*o = v
	return nil
}

// String is the comma-separated list Set reads.
func (o *Options) String() string {
	if o == nil {
		return ""
	}
	var fs []string
	if o.Queues != 0 {
		fs = append(fs, "queues="+strconv.Itoa(o.Queues))
	}
	if o.Batch != 0 {
		fs = append(fs, "batch="+strconv.Itoa(o.Batch))
	}
	for _, f := range []struct {
		on   bool
		name string
	}{{o.NoVnet, "novnet"}, {o.NoGSO, "nogso"}, {o.NoGRO, "nogro"}, {o.NoMerge, "nomerge"}} {
		if f.on {
			fs = append(fs, f.name)
		}
	}
	return strings.Join(fs, ",")
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

// Config is what an engine runs with.
type Config struct {
	Device  string       // the TUN device's name
	Encap   Encap        // the encapsulation
	Options Options      // data-path tuning
	Local   netip.Addr   // the node's public IPv4 address: outer source
	Network netip.Prefix // the cluster network (ICMP errors' source)
	MTU     int          // the device's MTU
	Kernel  kernel.Kernel
	Logger  *slog.Logger
}

// reportEvery is how often changed drop counters are logged.
const reportEvery = 2 * time.Second

// Engine is one userspace tunnel.
type Engine struct {
	c     Config
	log   *slog.Logger
	peers *table
	stats Stats

	mu    sync.Mutex // guards the fields below
	conn  conn
	dp    *datapath
	index int
	stop  context.CancelFunc // ends the stats reporter
}

// New builds an engine; Ensure starts it.
func New(c Config) *Engine {
	if c.Options.Queues <= 0 {
		c.Options.Queues = min(runtime.NumCPU(), 4)
	}
	if c.Options.Batch <= 0 {
		c.Options.Batch = 32
	}
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Engine{c: c, log: log, peers: newTable()}
}

// SetPeer adds or updates a peer: packets for subnet go to the peer's
// endpoint, and only packets from that endpoint may carry sources in subnet.
func (e *Engine) SetPeer(key string, subnet netip.Prefix, public netip.Addr) {
	if e.peers.set(peer{key: key, subnet: subnet.Masked(), endpoint: e.c.Encap.Endpoint(public)}) {
		e.log.Debug("peer set", "lease", key, "endpoint", public)
	}
}

// ForgetPeer drops a peer; unknown keys are ignored.
func (e *Engine) ForgetPeer(key string) {
	if e.peers.remove(key) {
		e.log.Debug("peer removed", "lease", key)
	}
}

// Lookup returns the endpoint packets for dst are sent to.
func (e *Engine) Lookup(dst netip.Addr) (netip.AddrPort, bool) {
	if p := e.peers.load().lookup(dst); p != nil {
		return p.endpoint, true
	}
	return netip.AddrPort{}, false
}

// Observe finds the device as it is, without opening or changing it, and
// reports whether it exists (weft status).
func (e *Engine) Observe() (bool, error) {
	link, err := e.c.Kernel.LinkByName(e.c.Device)
	if err != nil {
		if errors.Is(err, kernel.ErrLinkNotFound) {
			return false, nil
		}
		return false, fmt.Errorf("find %s: %w", e.c.Device, err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.index = link.Index
	return true, nil
}

// Stats returns the data path's counters.
func (e *Engine) Stats() *Stats { return &e.stats }

// Index is the device's interface index, 0 before Ensure made it.
func (e *Engine) Index() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.index
}

// Ensure opens the socket and the device (creating it, or attaching to the
// one a previous weftd left) and runs the data path; the device's address
// and MTU are Device's, for the reconciler. Called again with the device
// intact, it changes nothing.
func (e *Engine) Ensure(ctx context.Context, own netip.Prefix) error {
	if !own.IsValid() || !own.Addr().Is4() {
		return fmt.Errorf("the own lease has no IPv4 subnet")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.peers.setOwn(own.Masked(), e.c.Network)
	if e.conn == nil {
		c, err := e.c.Encap.listen(e.c.Local, e.c.Options)
		if err != nil {
			return err
		}
		e.conn = c
		rctx, cancel := context.WithCancel(ctx)
		e.stop = cancel
		go e.report(rctx)
	}
	link, err := e.c.Kernel.LinkByName(e.c.Device)
	if e.dp != nil && err == nil && link.Index == e.index {
		return nil
	}
	if e.dp != nil {
		e.log.Info("the device changed under the data path; reattaching", "device", e.c.Device, "err", err)
		e.dp.stop()
		e.dp = nil
	}
	return e.attachLocked(ctx)
}

// attachLocked opens the TUN queues (replacing a device of the name that
// cannot be attached to, such as flannel's single-queue flannel0 or a kernel
// ipip device), turns IPv6 off on it and starts the workers.
func (e *Engine) attachLocked(ctx context.Context) error {
	h := e.c.Kernel
	o := tunOptions{queues: e.c.Options.Queues, offload: !e.c.Options.NoVnet}
	tun, err := openTUN(e.c.Device, o)
	if errors.Is(err, errIncompatible) {
		if link, lerr := h.LinkByName(e.c.Device); lerr == nil {
			e.log.Info("replacing an incompatible device", "device", e.c.Device, "kind", link.Kind)
			if err := h.DeleteLink(link.Index); err != nil {
				return fmt.Errorf("delete incompatible %s: %w", e.c.Device, err)
			}
		}
		tun, err = openTUN(e.c.Device, o)
	}
	if err != nil {
		return err
	}
	link, err := h.LinkByName(e.c.Device)
	if err != nil {
		tun.Close()
		return fmt.Errorf("find %s: %w", e.c.Device, err)
	}
	e.disableIPv6()
	e.index = link.Index
	e.dp = &datapath{tun: tun, conn: e.conn, peers: e.peers, stats: &e.stats, log: e.log, noMerge: e.c.Options.NoMerge,
		batch: e.c.Options.Batch, vnet: o.offload, mtu: e.c.MTU}
	e.dp.start(ctx)
	e.log.Info("data path running", "device", e.c.Device, "encap", e.c.Encap.Name, "queues", len(tun.queues),
		"vnet-hdr", o.offload, "uso", tun.uso, "gro", e.conn.gro(), "batch", e.c.Options.Batch, "merge", !e.c.Options.NoMerge,
		"endpoint", e.c.Encap.Endpoint(e.c.Local), "mtu", e.c.MTU)
	return nil
}

// disableIPv6 turns IPv6 off on the device. The tunnel carries IPv4 only:
// without IPv6 on the device the kernel sends no router solicitations or
// MLD reports into it (they counted as malformed). Best effort: a kernel
// without IPv6 has no such file.
func (e *Engine) disableIPv6() {
	_ = os.WriteFile(filepath.Join("/proc/sys/net/ipv6/conf", e.c.Device, "disable_ipv6"), []byte("1"), 0o644)
}

// Device is the TUN as desired state: the MTU and <own subnet>.0/32. Routes
// and the device's configuration are the reconciler's.
func (e *Engine) Device(own netip.Prefix) kernel.Device {
	d := kernel.Device{Name: e.c.Device, MTU: e.c.MTU}
	if own.IsValid() {
		d.Addrs = []netip.Prefix{netip.PrefixFrom(own.Masked().Addr(), 32)}
	}
	return d
}

// report logs changed counters until ctx ends; then it stops the data path
// and closes the socket (the device stays).
func (e *Engine) report(ctx context.Context) {
	tick := time.NewTicker(reportEvery)
	defer tick.Stop()
	var last [5]uint64
	for {
		select {
		case <-ctx.Done():
			e.mu.Lock()
			e.closeLocked()
			e.mu.Unlock()
			return
		case <-tick.C:
		}
		s := &e.stats
		now := [5]uint64{s.UnknownSource.Load(), s.Spoofed.Load(), s.Malformed.Load(), s.NoRoute.Load(), s.SendErrors.Load()}
		if now != last {
			e.log.Info(e.c.Encap.Name+" data path drops", "unknown-source", now[0], "spoofed", now[1], "malformed", now[2],
				"no-route", now[3], "send-errors", now[4], "rx", s.RxPackets.Load(), "tx", s.TxPackets.Load())
			last = now
		}
	}
}

// Close stops the data path and closes the socket; the device, its address
// and its routes stay (as when weftd exits). Ensure sets it up again.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stop != nil {
		e.stop()
		e.stop = nil
	}
	e.closeLocked()
	return nil
}

// closeLocked closes the socket first, so that the receive worker returns
// at once, then stops the workers.
func (e *Engine) closeLocked() {
	if e.conn != nil {
		e.conn.Close()
		e.conn = nil
	}
	if e.dp != nil {
		e.dp.stop()
		e.dp = nil
	}
}
