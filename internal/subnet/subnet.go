// Package subnet does the address arithmetic of a cluster network: which
// subnets a node may lease, whether two subnets overlap, and the special
// addresses inside one. It works on net/netip values and has a single code path
// for IPv4 and IPv6 (addresses are handled as 128-bit integers).
package subnet

import (
	"errors"
	"fmt"
	"iter"
	"math"
	"math/rand/v2"
	"net/netip"
	"sort"
)

// ErrExhausted is returned by Pool.Pick when every candidate subnet overlaps a
// taken one.
var ErrExhausted = errors.New("no free subnet")

// Pool is the set of subnets of length Len, aligned, inside Network, from Min
// to Max inclusive. A Pool is a value; build it with NewPool.
type Pool struct {
	network  netip.Prefix
	bits     int
	min, max netip.Addr
}

// NewPool checks and returns the pool of /bits subnets of network from the
// subnet starting at min to the one starting at max.
func NewPool(network netip.Prefix, bits int, min, max netip.Addr) (Pool, error) {
	if !network.IsValid() {
		return Pool{}, errors.New("invalid network")
	}
	network = network.Masked()
	if bits < network.Bits() || bits > network.Addr().BitLen() {
		return Pool{}, fmt.Errorf("subnet length /%d is not between /%d and /%d", bits, network.Bits(), network.Addr().BitLen())
	}
	for _, a := range []netip.Addr{min, max} {
		if !IsAligned(a, bits) || !network.Contains(a) {
			return Pool{}, fmt.Errorf("%s is not a /%d subnet of %s", a, bits, network)
		}
	}
	if min.Compare(max) > 0 {
		return Pool{}, fmt.Errorf("first subnet %s is after last subnet %s", min, max)
	}
	return Pool{network: network, bits: bits, min: min, max: max}, nil
}

// Network returns the cluster network the pool is part of.
func (p Pool) Network() netip.Prefix { return p.network }

// Bits returns the prefix length of the pool's subnets.
func (p Pool) Bits() int { return p.bits }

// First returns the lowest subnet of the pool.
func (p Pool) First() netip.Prefix { return netip.PrefixFrom(p.min, p.bits) }

// Last returns the highest subnet of the pool.
func (p Pool) Last() netip.Prefix { return netip.PrefixFrom(p.max, p.bits) }

func (p Pool) shift() int { return p.min.BitLen() - p.bits }

// count returns the number of subnets as a 128-bit integer (it is at most
// 2^128-1, since a pool of /128 subnets covering ::/0 cannot be configured).
func (p Pool) count() u128 {
	return addrToU128(p.max).sub(addrToU128(p.min)).shr(p.shift()).add(u128{lo: 1})
}

// Count returns the number of subnets in the pool, saturating at MaxUint64.
func (p Pool) Count() uint64 {
	c := p.count()
	if c.hi != 0 {
		return math.MaxUint64
	}
	return c.lo
}

func (p Pool) nth(i u128) netip.Prefix {
	a := addrToU128(p.min).add(i.shl(p.shift()))
	return netip.PrefixFrom(u128ToAddr(a, p.min.Is4()), p.bits)
}

// Contains reports whether s is one of the pool's subnets: the same length,
// aligned, between the first and the last.
func (p Pool) Contains(s netip.Prefix) bool {
	return s.IsValid() && s.Bits() == p.bits && s.Addr().Is4() == p.min.Is4() && IsAligned(s.Addr(), p.bits) &&
		s.Addr().Compare(p.min) >= 0 && s.Addr().Compare(p.max) <= 0
}

// All yields every subnet of the pool in address order, lazily.
func (p Pool) All() iter.Seq[netip.Prefix] {
	return func(yield func(netip.Prefix) bool) {
		n := p.count()
		for i := (u128{}); i.cmp(n) < 0; i = i.add(u128{lo: 1}) {
			if !yield(p.nth(i)) {
				return
			}
		}
	}
}

// Pick returns a random subnet of the pool that overlaps none of taken. Its
// cost is O(k log k) for k taken prefixes, whatever the pool's size: it starts
// at a random subnet and jumps past whole runs of taken space.
func (p Pool) Pick(taken *Taken, rnd *rand.Rand) (netip.Prefix, error) {
	n := p.count()
	start := randBelow(n, rnd)
	base := addrToU128(p.min)
	shift := p.shift()
	i := start
	wrapped := false
	for {
		if wrapped && i.cmp(start) >= 0 {
			return netip.Prefix{}, ErrExhausted
		}
		cand := p.nth(i)
		end, hit := taken.overlapEnd(cand)
		if !hit {
			return cand, nil
		}
		// Jump to the first subnet that starts after the taken run ends.
		i = end.sub(base).shr(shift).add(u128{lo: 1})
		if i.cmp(n) >= 0 {
			if wrapped {
				return netip.Prefix{}, ErrExhausted
			}
			wrapped, i = true, u128{}
		}
	}
}

func randBelow(n u128, rnd *rand.Rand) u128 {
	if n.hi == 0 {
		return u128{lo: rnd.Uint64N(n.lo)}
	}
	for {
		v := u128{hi: rnd.Uint64N(n.hi + 1), lo: rnd.Uint64()}
		if v.cmp(n) < 0 {
			return v
		}
	}
}

// Taken is a set of subnets in use, indexed for overlap queries in O(log k).
// Prefixes of the other address family than the query are ignored.
type Taken struct {
	runs [2][]interval // [0] IPv4, [1] IPv6; sorted, merged
}

type interval struct{ start, end u128 }

// NewTaken indexes the given prefixes. Invalid prefixes are ignored.
func NewTaken(prefixes []netip.Prefix) *Taken {
	t := &Taken{}
	for _, s := range prefixes {
		if !s.IsValid() {
			continue
		}
		f := family(s.Addr())
		t.runs[f] = append(t.runs[f], span(s))
	}
	for f := range t.runs {
		t.runs[f] = merge(t.runs[f])
	}
	return t
}

// Len returns the number of disjoint runs of taken space.
func (t *Taken) Len() int { return len(t.runs[0]) + len(t.runs[1]) }

// Overlaps reports whether s overlaps any taken subnet.
func (t *Taken) Overlaps(s netip.Prefix) bool {
	_, hit := t.overlapEnd(s)
	return hit
}

// overlapEnd returns the last address of the taken run that overlaps s.
func (t *Taken) overlapEnd(s netip.Prefix) (u128, bool) {
	if t == nil || !s.IsValid() {
		return u128{}, false
	}
	runs := t.runs[family(s.Addr())]
	iv := span(s)
	// First run whose end is >= the start of s; runs are disjoint and sorted,
	// so their ends are sorted too.
	k := sort.Search(len(runs), func(j int) bool { return runs[j].end.cmp(iv.start) >= 0 })
	if k < len(runs) && runs[k].start.cmp(iv.end) <= 0 {
		return runs[k].end, true
	}
	return u128{}, false
}

func family(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

func span(s netip.Prefix) interval {
	s = s.Masked()
	start := addrToU128(s.Addr())
	hostBits := s.Addr().BitLen() - s.Bits()
	var size u128
	if hostBits == 128 {
		size = u128{hi: math.MaxUint64, lo: math.MaxUint64}
	} else {
		size = u128{lo: 1}.shl(hostBits).sub(u128{lo: 1})
	}
	return interval{start: start, end: start.add(size)}
}

func merge(iv []interval) []interval {
	if len(iv) == 0 {
		return nil
	}
	sort.Slice(iv, func(a, b int) bool { return iv[a].start.cmp(iv[b].start) < 0 })
	out := iv[:1]
	for _, v := range iv[1:] {
		last := &out[len(out)-1]
		if v.start.cmp(last.end) <= 0 || v.start.cmp(last.end.add(u128{lo: 1})) == 0 && !last.end.add(u128{lo: 1}).isZero() {
			if v.end.cmp(last.end) > 0 {
				last.end = v.end
			}
			continue
		}
		out = append(out, v)
	}
	return out
}

// IsAligned reports whether a is the first address of its /bits prefix.
func IsAligned(a netip.Addr, bits int) bool {
	p, err := a.Prefix(bits)
	return err == nil && p.Addr() == a
}

// Contains reports whether inner lies entirely inside outer.
func Contains(outer, inner netip.Prefix) bool {
	return outer.IsValid() && inner.IsValid() && inner.Bits() >= outer.Bits() &&
		outer.Contains(inner.Addr())
}

// Overlaps reports whether a and b share any address.
func Overlaps(a, b netip.Prefix) bool { return a.Overlaps(b) }

// ZeroAddr returns the first address of s (the ".0" address flannel gives the
// vxlan device and uses as the next hop of a remote subnet).
func ZeroAddr(s netip.Prefix) netip.Addr { return s.Masked().Addr() }

// FirstHost returns the first host address of s (the ".1" address of the
// bridge, written to subnet.env as FLANNEL_SUBNET).
func FirstHost(s netip.Prefix) netip.Addr { return s.Masked().Addr().Next() }

// Nth returns the i-th /bits subnet of network counting from 0, and false if
// there is no such subnet.
func Nth(network netip.Prefix, bits int, i uint64) (netip.Prefix, bool) {
	network = network.Masked()
	if bits < network.Bits() || bits > network.Addr().BitLen() {
		return netip.Prefix{}, false
	}
	shift := network.Addr().BitLen() - bits
	width := bits - network.Bits()
	if width < 64 && i >= uint64(1)<<width {
		return netip.Prefix{}, false
	}
	a := addrToU128(network.Addr()).add(u128{lo: i}.shl(shift))
	return netip.PrefixFrom(u128ToAddr(a, network.Addr().Is4()), bits), true
}

// LastSubnet returns the last /bits subnet of network minus back subnets
// (back 0 is the very last one).
func LastSubnet(network netip.Prefix, bits int, back uint64) (netip.Prefix, bool) {
	network = network.Masked()
	if bits < network.Bits() || bits > network.Addr().BitLen() {
		return netip.Prefix{}, false
	}
	shift := network.Addr().BitLen() - bits
	width := bits - network.Bits()
	if width < 64 && back >= uint64(1)<<width {
		return netip.Prefix{}, false
	}
	last := span(network).end
	a := last.sub(u128{lo: back}.shl(shift)).shr(shift).shl(shift)
	return netip.PrefixFrom(u128ToAddr(a, network.Addr().Is4()), bits), true
}
