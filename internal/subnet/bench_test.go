package subnet

import (
	"math/rand/v2"
	"net/netip"
	"strconv"
	"testing"
)

// takenSet returns n distinct random /24s of 10.0.0.0/8.
func takenSet(n int) []netip.Prefix {
	rnd := rand.New(rand.NewPCG(7, 8))
	seen := map[netip.Prefix]bool{}
	var out []netip.Prefix
	for len(out) < n {
		s, _ := Nth(netip.MustParsePrefix("10.0.0.0/8"), 24, 1+rnd.Uint64N(65534))
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// BenchmarkPick measures indexing k taken subnets and picking a free one. It
// must grow as k log k, not k^2: compare the ns/op of the sub-benchmarks.
func BenchmarkPick(b *testing.B) {
	p, _ := NewPool(netip.MustParsePrefix("10.0.0.0/8"), 24, netip.MustParseAddr("10.0.1.0"), netip.MustParseAddr("10.255.254.0"))
	for _, k := range []int{500, 5000, 50000} {
		taken := takenSet(k)
		b.Run("taken="+strconv.Itoa(k), func(b *testing.B) {
			rnd := rand.New(rand.NewPCG(1, 1))
			for b.Loop() {
				if _, err := p.Pick(NewTaken(taken), rnd); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPickDense picks the last free subnet of a pool of 5,000 of which
// 4,999 are taken: the worst case of the jump-ahead walk.
func BenchmarkPickDense(b *testing.B) {
	network := netip.MustParsePrefix("10.0.0.0/11")
	p, _ := NewPool(network, 24, netip.MustParseAddr("10.0.0.0"), netip.MustParseAddr("10.19.135.0")) // 5,000 subnets
	var taken []netip.Prefix
	for i := uint64(0); i < p.Count(); i++ {
		if i != 2500 {
			s, _ := Nth(network, 24, i)
			taken = append(taken, s)
		}
	}
	tk := NewTaken(taken)
	rnd := rand.New(rand.NewPCG(1, 1))
	for b.Loop() {
		if _, err := p.Pick(tk, rnd); err != nil {
			b.Fatal(err)
		}
	}
}
