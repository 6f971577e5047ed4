//go:build linux

package tunnel

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
)

// peer is one remote node: its subnet and the address its datagrams come
// from and go to.
type peer struct {
	key      string
	subnet   netip.Prefix
	endpoint netip.AddrPort
}

// snapshot is an immutable view of the peers that the workers read without
// locks. byDst is keyed by subnet per prefix length (a cluster has one or a
// few), so a lookup is one map probe per length, never a scan of the peers.
type snapshot struct {
	own     netip.Prefix
	icmpSrc netip.Addr // source of ICMP errors: the network's first address
	lengths []int      // prefix lengths present, longest first
	byDst   map[netip.Prefix]*peer
	bySrc   map[netip.AddrPort]*peer
}

// lookup returns the peer whose subnet holds dst.
func (s *snapshot) lookup(dst netip.Addr) *peer {
	for _, bits := range s.lengths {
		pfx, _ := dst.Prefix(bits)
		if p := s.byDst[pfx]; p != nil {
			return p
		}
	}
	return nil
}

// table is the peer table: writers (the daemon's loop via Peer and
// ForgetPeer) copy and swap the snapshot; workers load it per batch, so
// updates never stop traffic.
type table struct {
	cur atomic.Pointer[snapshot]

	mu      sync.Mutex // guards peers and own, and serialises swaps
	peers   map[string]peer
	own     netip.Prefix
	icmpSrc netip.Addr
}

func newTable() *table {
	t := &table{peers: map[string]peer{}}
	t.publishLocked()
	return t
}

func (t *table) load() *snapshot { return t.cur.Load() }

// set adds or replaces a peer; it reports whether anything changed.
func (t *table) set(p peer) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.peers[p.key]; ok && old == p {
		return false
	}
	t.peers[p.key] = p
	t.publishLocked()
	return true
}

// remove drops a peer; it reports whether it was there.
func (t *table) remove(key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.peers[key]; !ok {
		return false
	}
	delete(t.peers, key)
	t.publishLocked()
	return true
}

// setOwn sets the node's subnet and the cluster network. ICMP errors come
// from the network's first address: the node's own addresses would be
// martians when written into the TUN, and the first subnet is never leased
// by default (SubnetMin); if it is ours, errors come from the address that
// could not be reached.
func (t *table) setOwn(own, network netip.Prefix) {
	t.mu.Lock()
	defer t.mu.Unlock()
	src := network.Masked().Addr()
	if own.Contains(src) {
		src = netip.Addr{}
	}
	if t.own != own || t.icmpSrc != src {
		t.own, t.icmpSrc = own, src
		t.publishLocked()
	}
}

func (t *table) publishLocked() {
	s := &snapshot{own: t.own, icmpSrc: t.icmpSrc, byDst: make(map[netip.Prefix]*peer, len(t.peers)), bySrc: make(map[netip.AddrPort]*peer, len(t.peers))}
	for _, p := range t.peers {
		p := p
		s.byDst[p.subnet] = &p
		s.bySrc[p.endpoint] = &p
		if !slices.Contains(s.lengths, p.subnet.Bits()) {
			s.lengths = append(s.lengths, p.subnet.Bits())
		}
	}
	slices.SortFunc(s.lengths, func(a, b int) int { return b - a })
	t.cur.Store(s)
}
