package netpol

import (
	"cmp"
	"net/netip"
	"slices"
	"sort"
)

// AddrRange is the addresses From to To, both included, of one family.
type AddrRange struct{ From, To netip.Addr }

// Contains reports whether a is in r.
func (r AddrRange) Contains(a netip.Addr) bool {
	return a.BitLen() == r.From.BitLen() && r.From.Compare(a) <= 0 && a.Compare(r.To) <= 0
}

// String renders r as nftables writes an interval element.
func (r AddrRange) String() string {
	if r.From == r.To {
		return r.From.String()
	}
	return r.From.String() + "-" + r.To.String()
}

// single is the range of one address.
func single(a netip.Addr) AddrRange { return AddrRange{a, a} }

// prefixRange returns the addresses of p (p is masked first).
func prefixRange(p netip.Prefix) AddrRange {
	p = p.Masked()
	from := p.Addr()
	to := from.As16()
	bits := p.Bits()
	off := 0
	if from.Is4() {
		off = 96
	}
	for i := bits + off; i < 128; i++ {
		to[i/8] |= 1 << (7 - i%8)
	}
	last := netip.AddrFrom16(to)
	if from.Is4() {
		last = last.Unmap()
	}
	return AddrRange{from, last}
}

// normalize sorts ranges and joins those that overlap or touch, so that an
// nftables interval set takes them (it refuses overlapping elements) and a
// listing of the kernel's set has as many elements.
func normalize(rs []AddrRange) []AddrRange {
	if len(rs) == 0 {
		return nil
	}
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b AddrRange) int { return a.From.Compare(b.From) })
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		next := last.To.Next()
		if r.From.Compare(last.To) <= 0 || (next.IsValid() && next == r.From) {
			if r.To.Compare(last.To) > 0 {
				last.To = r.To
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

// subtract returns rs without the addresses of cut. rs must be normalized;
// so is the result.
func subtract(rs []AddrRange, cut AddrRange) []AddrRange {
	var out []AddrRange
	for _, r := range rs {
		if r.From.BitLen() != cut.From.BitLen() || cut.To.Compare(r.From) < 0 || r.To.Compare(cut.From) < 0 {
			out = append(out, r)
			continue
		}
		if r.From.Compare(cut.From) < 0 {
			out = append(out, AddrRange{r.From, cut.From.Prev()})
		}
		if cut.To.Compare(r.To) < 0 {
			out = append(out, AddrRange{cut.To.Next(), r.To})
		}
	}
	return out
}

// inRanges reports whether a is in one of the normalized ranges rs.
func inRanges(rs []AddrRange, a netip.Addr) bool {
	// The first range that ends at or after a is the only one that can hold it.
	i := sort.Search(len(rs), func(i int) bool { return rs[i].To.BitLen() == a.BitLen() && a.Compare(rs[i].To) <= 0 })
	return i < len(rs) && rs[i].Contains(a)
}

// PortRange is the destination ports From to To, both included, of IP
// protocol Proto.
type PortRange struct {
	Proto    uint8
	From, To uint16
}

// Contains reports whether a packet of protocol proto to port is in r.
func (r PortRange) Contains(proto uint8, port uint16) bool {
	return proto == r.Proto && r.From <= port && port <= r.To
}

// normalizePorts sorts port ranges and joins those that overlap or touch.
func normalizePorts(ps []PortRange) []PortRange {
	if len(ps) == 0 {
		return nil
	}
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b PortRange) int {
		return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.From, b.From))
	})
	out := ps[:1]
	for _, p := range ps[1:] {
		last := &out[len(out)-1]
		if p.Proto == last.Proto && uint32(p.From) <= uint32(last.To)+1 {
			last.To = max(last.To, p.To)
			continue
		}
		out = append(out, p)
	}
	return out
}

// AddrPort is a destination address with protocol and port: an element of
// a named-port set.
type AddrPort struct {
	Addr  netip.Addr
	Proto uint8
	Port  uint16
}

func compareAddrPort(a, b AddrPort) int {
	return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Port, b.Port))
}
