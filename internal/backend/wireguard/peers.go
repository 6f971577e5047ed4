//go:build linux

package wireguard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// control configures WireGuard devices: a wgctrl client (the kernel path)
// or the in-process wireguard-go devices (the userspace path), or a test's
// fake. Its contract is wgctrl's: Device returns the device with its peers;
// ConfigureDevice applies a partial configuration.
type control interface {
	Device(name string) (*wgtypes.Device, error)
	ConfigureDevice(name string, cfg wgtypes.Config) error
}

// leaseData is the wireguard lease's BackendData (and BackendV6Data):
// {"PublicKey":"<base64>","Port":51820}. flannel writes only PublicKey;
// its peers then use their own ListenPort.
type leaseData struct {
	PublicKey string
	Port      int `json:",omitempty"`
}

// parseLeaseData reads a peer's BackendData; what is missing or malformed
// is an error naming the field (another node wrote it).
func parseLeaseData(raw json.RawMessage, field string) (wgtypes.Key, int, error) {
	if len(raw) == 0 {
		return wgtypes.Key{}, 0, fmt.Errorf("it has no %s (a wireguard lease carries the node's public key there)", field)
	}
	var d leaseData
	if err := json.Unmarshal(raw, &d); err != nil {
		return wgtypes.Key{}, 0, fmt.Errorf("its %s is not a wireguard lease's: %w", field, err)
	}
	k, err := wgtypes.ParseKey(d.PublicKey)
	if err != nil || k == (wgtypes.Key{}) {
		return wgtypes.Key{}, 0, fmt.Errorf("its %s.PublicKey is not a base64-encoded 32-byte key", field)
	}
	if d.Port < 0 || d.Port > 65535 {
		return wgtypes.Key{}, 0, fmt.Errorf("its %s.Port %d is not a UDP port", field, d.Port)
	}
	return k, d.Port, nil
}

// peerSpec is one WireGuard peer as a lease wants it.
type peerSpec struct {
	key      wgtypes.Key
	endpoint netip.AddrPort
	allowed  []netip.Prefix // masked, sorted
}

func (p peerSpec) equal(q peerSpec) bool {
	return p.key == q.key && p.endpoint == q.endpoint && slices.Equal(p.allowed, q.allowed)
}

// peerSync owns the WireGuard peers of the backend's devices as desired
// state, the way the reconciler owns routes: the daemon's lease events set
// what each device should have (set, forget); sync compares that with the
// device and writes only the difference. It runs after every change, on
// every kick (a wg command through the userspace path's control socket) and
// every interval, so that a peer removed by hand comes back and a peer
// whose lease is gone goes. Peers no lease wants are removed only once the
// daemon has listed every lease (prune), so that a restart does not drop
// the peers its predecessor configured before their leases are known.
//
// The endpoint is written when a peer is added or its lease changes, and
// otherwise left to WireGuard, which moves it to where the peer's
// authenticated packets come from (roaming, as behind a NAT).
type peerSync struct {
	ctl       control
	log       *slog.Logger
	psk       secret
	keepalive time.Duration
	// device-level settings that sync also restores
	priv  secret
	ports map[string]int

	mu      sync.Mutex
	want    map[string]map[string]peerSpec // device -> lease key -> peer
	written map[string]map[wgtypes.Key]peerSpec
	pruning bool
	kick    chan struct{}
}

func newPeerSync(ctl control, log *slog.Logger, priv, psk secret, keepalive time.Duration, ports map[string]int) *peerSync {
	ps := &peerSync{ctl: ctl, log: log, priv: priv, psk: psk, keepalive: keepalive, ports: ports,
		want: map[string]map[string]peerSpec{}, written: map[string]map[wgtypes.Key]peerSpec{},
		kick: make(chan struct{}, 1)}
	for dev := range ports {
		ps.want[dev] = map[string]peerSpec{}
		ps.written[dev] = map[wgtypes.Key]peerSpec{}
	}
	return ps
}

// set makes the peers of lease key on each device specs (a device missing
// from specs has none of the lease's).
func (ps *peerSync) set(key string, specs map[string]peerSpec) {
	ps.mu.Lock()
	for dev, w := range ps.want {
		if s, ok := specs[dev]; ok {
			w[key] = s
		} else {
			delete(w, key)
		}
	}
	ps.mu.Unlock()
	ps.poke()
}

// forget removes lease key's peers.
func (ps *peerSync) forget(key string) { ps.set(key, nil) }

// prune allows sync to remove peers no lease wants, from now on.
func (ps *peerSync) prune() {
	ps.mu.Lock()
	ps.pruning = true
	ps.mu.Unlock()
	ps.poke()
}

func (ps *peerSync) poke() {
	select {
	case ps.kick <- struct{}{}:
	default:
	}
}

// run syncs on every kick and every interval until ctx ends.
func (ps *peerSync) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ps.kick:
		case <-t.C:
		}
		if _, err := ps.sync(); err != nil && ctx.Err() == nil {
			ps.log.Warn("wireguard peers not in sync; retrying", "err", err)
		}
	}
}

// syncStats counts one sync's writes.
type syncStats struct{ added, updated, removed int }

// sync brings every device's peers to the desired state.
func (ps *peerSync) sync() (syncStats, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	var st syncStats
	var errs []error
	for _, dev := range slices.Sorted(maps.Keys(ps.want)) {
		if err := ps.syncDevice(dev, &st); err != nil {
			errs = append(errs, err)
		}
	}
	if st != (syncStats{}) {
		ps.log.Info("wireguard peers written", "added", st.added, "updated", st.updated, "removed", st.removed)
	}
	if len(errs) > 0 {
		return st, fmt.Errorf("%v", errs)
	}
	return st, nil
}

// wanted merges the leases' peers by public key: two leases of one node (a
// lease moving to a new subnet) are one peer with both subnets.
func (ps *peerSync) wanted(dev string) map[wgtypes.Key]peerSpec {
	out := map[wgtypes.Key]peerSpec{}
	w := ps.want[dev]
	for _, lk := range slices.Sorted(maps.Keys(w)) {
		s := w[lk]
		if o, ok := out[s.key]; ok {
			s.allowed = sortedPrefixes(append(slices.Clone(o.allowed), s.allowed...))
		}
		out[s.key] = s
	}
	return out
}

func (ps *peerSync) syncDevice(dev string, st *syncStats) error {
	have, err := ps.ctl.Device(dev)
	if err != nil {
		return fmt.Errorf("read %s: %w", dev, err)
	}
	want := ps.wanted(dev)
	written := ps.written[dev]
	cfg := wgtypes.Config{}
	if have.PrivateKey != ps.priv.key() {
		k := ps.priv.key()
		cfg.PrivateKey = &k
	}
	if port := ps.ports[dev]; have.ListenPort != port {
		cfg.ListenPort = &port
	}
	onDevice := make(map[wgtypes.Key]wgtypes.Peer, len(have.Peers))
	for _, p := range have.Peers {
		onDevice[p.PublicKey] = p
	}
	var added, updated []wgtypes.Key
	for _, k := range slices.SortedFunc(maps.Keys(want), compareKeys) {
		w := want[k]
		h, ok := onDevice[k]
		switch {
		case !ok:
			added = append(added, k)
		case !w.equal(written[k]) || !ps.sameSettings(h, w):
			updated = append(updated, k)
		default:
			continue
		}
		cfg.Peers = append(cfg.Peers, ps.peerConfig(w))
	}
	// Before the prune only the peers this process wrote are known to be
	// stale; after it, every peer no lease wants is.
	var removed []wgtypes.Key
	for _, p := range have.Peers {
		_, wanted := want[p.PublicKey]
		_, ours := written[p.PublicKey]
		if !wanted && (ps.pruning || ours) {
			removed = append(removed, p.PublicKey)
			cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: p.PublicKey, Remove: true})
		}
	}
	if cfg.PrivateKey == nil && cfg.ListenPort == nil && len(cfg.Peers) == 0 {
		return nil
	}
	if err := ps.ctl.ConfigureDevice(dev, cfg); err != nil {
		return fmt.Errorf("configure %s: %w", dev, err)
	}
	for _, k := range append(added, updated...) {
		written[k] = want[k]
	}
	for k := range written {
		if _, ok := want[k]; !ok {
			delete(written, k)
		}
	}
	for _, k := range added {
		ps.log.Debug("wireguard peer added", "device", dev, "peer", k.String(), "endpoint", want[k].endpoint)
	}
	for _, k := range removed {
		ps.log.Debug("wireguard peer removed", "device", dev, "peer", k.String())
	}
	switch {
	case cfg.PrivateKey != nil && have.PrivateKey == (wgtypes.Key{}):
		ps.log.Info("configured the device's private key and listen port", "device", dev, "port", ps.ports[dev])
	case cfg.PrivateKey != nil || cfg.ListenPort != nil:
		ps.log.Warn("restored the device's private key and listen port, changed by someone else", "device", dev, "port", ps.ports[dev])
	}
	st.added += len(added)
	st.updated += len(updated)
	st.removed += len(removed)
	return nil
}

// sameSettings compares what sync restores on a peer that nobody's lease
// changed: its allowed IPs, pre-shared key and keepalive (the endpoint is
// WireGuard's once set, see peerSync).
func (ps *peerSync) sameSettings(h wgtypes.Peer, w peerSpec) bool {
	have := make([]netip.Prefix, 0, len(h.AllowedIPs))
	for _, n := range h.AllowedIPs {
		if p, ok := prefixOf(n); ok {
			have = append(have, p)
		}
	}
	return slices.Equal(sortedPrefixes(have), w.allowed) && h.PresharedKey == ps.psk.key() &&
		h.PersistentKeepaliveInterval == ps.keepalive
}

func (ps *peerSync) peerConfig(w peerSpec) wgtypes.PeerConfig {
	psk, ka := ps.psk.key(), ps.keepalive
	allowed := make([]net.IPNet, len(w.allowed))
	for i, p := range w.allowed {
		allowed[i] = net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
	}
	return wgtypes.PeerConfig{PublicKey: w.key, PresharedKey: &psk, PersistentKeepaliveInterval: &ka,
		Endpoint: net.UDPAddrFromAddrPort(w.endpoint), ReplaceAllowedIPs: true, AllowedIPs: allowed}
}

// diff names how every device differs from the desired state, writing
// nothing (weft status). Like sync, it leaves the endpoint to WireGuard: a
// peer behind a NAT is reached where its packets come from, not where its
// lease says.
func (ps *peerSync) diff() ([]string, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	var out []string
	for _, dev := range slices.Sorted(maps.Keys(ps.want)) {
		have, err := ps.ctl.Device(dev)
		if errors.Is(err, fs.ErrNotExist) {
			// No such device (Observe names it), or a TUN whose control
			// socket is gone: nothing serves it.
			out = append(out, fmt.Sprintf("the wireguard peers of %s cannot be read: %v", dev, err))
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read the wireguard peers of %s: %w", dev, err)
		}
		if !ps.priv.isZero() && have.PrivateKey != ps.priv.key() {
			out = append(out, fmt.Sprintf("%s's private key is not the key file's", dev))
		}
		if port := ps.ports[dev]; have.ListenPort != port {
			out = append(out, fmt.Sprintf("%s listens on port %d, not %d", dev, have.ListenPort, port))
		}
		want := ps.wanted(dev)
		onDevice := map[wgtypes.Key]bool{}
		for _, p := range have.Peers {
			onDevice[p.PublicKey] = true
			w, ok := want[p.PublicKey]
			switch {
			case !ok:
				out = append(out, fmt.Sprintf("extra wireguard peer %s on %s", p.PublicKey, dev))
			case !ps.sameSettings(p, w):
				out = append(out, fmt.Sprintf("different wireguard peer %s on %s: allowed IPs, pre-shared key or keepalive not as configured", p.PublicKey, dev))
			}
		}
		for _, k := range slices.SortedFunc(maps.Keys(want), compareKeys) {
			if !onDevice[k] {
				out = append(out, fmt.Sprintf("missing wireguard peer %s on %s (endpoint %s, allowed IPs %v)", k, dev, want[k].endpoint, want[k].allowed))
			}
		}
	}
	return out, nil
}

func prefixOf(n net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	if a.Is4In6() {
		a = a.Unmap()
		if len(n.Mask) == net.IPv6len {
			ones -= 96
		}
	}
	return netip.PrefixFrom(a, ones).Masked(), true
}

func sortedPrefixes(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Masked())
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(out)
}

func compareKeys(a, b wgtypes.Key) int {
	for i := range a {
		if a[i] != b[i] {
			return int(a[i]) - int(b[i])
		}
	}
	return 0
}
