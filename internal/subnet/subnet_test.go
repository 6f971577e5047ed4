package subnet

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

func mustPool(t testing.TB, network string, bits int, min, max string) Pool {
	t.Helper()
	p, err := NewPool(pfx(network), bits, addr(min), addr(max))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPoolEnumerationBothFamilies(t *testing.T) {
	tests := []struct {
		pool Pool
		want []string
	}{
		{mustPool(t, "10.0.0.0/28", 30, "10.0.0.4", "10.0.0.8"), []string{"10.0.0.4/30", "10.0.0.8/30"}},
		{mustPool(t, "10.244.0.0/16", 24, "10.244.254.0", "10.244.254.0"), []string{"10.244.254.0/24"}},
		{mustPool(t, "fd00::/120", 122, "fd00::40", "fd00::c0"), []string{"fd00::40/122", "fd00::80/122", "fd00::c0/122"}},
		{mustPool(t, "fd00:10:244::/56", 64, "fd00:10:244:fe::", "fd00:10:244:ff::"), []string{"fd00:10:244:fe::/64", "fd00:10:244:ff::/64"}},
		{mustPool(t, "255.255.255.0/24", 26, "255.255.255.128", "255.255.255.192"), []string{"255.255.255.128/26", "255.255.255.192/26"}},
	}
	for _, tc := range tests {
		var got []string
		for s := range tc.pool.All() {
			got = append(got, s.String())
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("All() = %v, want %v", got, tc.want)
		}
		if tc.pool.Count() != uint64(len(tc.want)) {
			t.Errorf("Count() = %d, want %d", tc.pool.Count(), len(tc.want))
		}
		for _, w := range tc.want {
			if !tc.pool.Contains(pfx(w)) {
				t.Errorf("Contains(%s) = false", w)
			}
		}
	}
}

func TestPoolContains(t *testing.T) {
	p := mustPool(t, "10.244.0.0/16", 24, "10.244.1.0", "10.244.254.0")
	for s, want := range map[string]bool{
		"10.244.1.0/24": true, "10.244.254.0/24": true, "10.244.0.0/24": false, "10.244.255.0/24": false,
		"10.244.1.0/25": false, "10.244.1.0/23": false, "10.245.1.0/24": false, "fd00::/24": false,
	} {
		if got := p.Contains(pfx(s)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", s, got, want)
		}
	}
	if p.Contains(netip.Prefix{}) {
		t.Error("Contains(invalid) = true")
	}
}

func TestNewPoolErrors(t *testing.T) {
	for _, tc := range []struct {
		network  string
		bits     int
		min, max string
	}{
		{"10.0.0.0/16", 15, "10.0.0.0", "10.0.0.0"},
		{"10.0.0.0/16", 33, "10.0.0.0", "10.0.0.0"},
		{"10.0.0.0/16", 24, "10.0.1.1", "10.0.2.0"},
		{"10.0.0.0/16", 24, "10.1.1.0", "10.0.2.0"},
		{"10.0.0.0/16", 24, "10.0.3.0", "10.0.2.0"},
	} {
		if _, err := NewPool(pfx(tc.network), tc.bits, addr(tc.min), addr(tc.max)); err == nil {
			t.Errorf("NewPool(%+v) succeeded", tc)
		}
	}
}

func TestPickAvoidsTakenAndOverlaps(t *testing.T) {
	p := mustPool(t, "10.0.0.0/16", 24, "10.0.1.0", "10.0.254.0")
	rnd := rand.New(rand.NewPCG(1, 2))
	// Everything is taken except 10.0.77.0/24, partly by larger and smaller prefixes.
	taken := []netip.Prefix{pfx("10.0.0.0/18"), pfx("10.0.128.0/17"), pfx("10.0.64.0/21"), pfx("10.0.72.0/22"),
		pfx("10.0.76.0/24"), pfx("10.0.78.0/23"), pfx("10.0.80.0/20"), pfx("10.0.96.0/19"), pfx("10.0.77.128/28")}
	// 10.0.77.128/28 overlaps the only gap, so the pool is exhausted.
	if s, err := p.Pick(NewTaken(taken), rnd); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Pick = %v, %v; want ErrExhausted", s, err)
	}
	taken = taken[:len(taken)-1]
	for i := 0; i < 50; i++ {
		s, err := p.Pick(NewTaken(taken), rnd)
		if err != nil || s != pfx("10.0.77.0/24") {
			t.Fatalf("Pick = %v, %v; want 10.0.77.0/24", s, err)
		}
	}
}

func TestPickFillsPoolExactly(t *testing.T) {
	for _, p := range []Pool{
		mustPool(t, "10.0.0.0/20", 26, "10.0.0.64", "10.0.15.128"),
		mustPool(t, "fd00::/56", 64, "fd00:0:0:1::", "fd00:0:0:fe::"),
	} {
		rnd := rand.New(rand.NewPCG(3, 4))
		var taken []netip.Prefix
		seen := map[netip.Prefix]bool{}
		for range p.Count() {
			s, err := p.Pick(NewTaken(taken), rnd)
			if err != nil {
				t.Fatalf("Pick after %d: %v", len(taken), err)
			}
			if seen[s] || !p.Contains(s) {
				t.Fatalf("Pick returned %v twice or outside the pool", s)
			}
			seen[s] = true
			taken = append(taken, s)
		}
		if _, err := p.Pick(NewTaken(taken), rnd); !errors.Is(err, ErrExhausted) {
			t.Fatalf("Pick on a full pool = %v, want ErrExhausted", err)
		}
	}
}

func TestPickIgnoresOtherFamilyAndHugeIPv6(t *testing.T) {
	p := mustPool(t, "fd00::/8", 126, "fd00::4", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:fff8")
	if p.Count() == 0 {
		t.Fatal("Count() = 0")
	}
	s, err := p.Pick(NewTaken([]netip.Prefix{pfx("10.0.0.0/8")}), rand.New(rand.NewPCG(5, 6)))
	if err != nil || !p.Contains(s) {
		t.Fatalf("Pick = %v, %v", s, err)
	}
}

func TestTakenOverlaps(t *testing.T) {
	tk := NewTaken([]netip.Prefix{pfx("10.0.1.0/24"), pfx("10.0.2.0/24"), pfx("fd00::/64"), {}})
	for s, want := range map[string]bool{"10.0.1.0/24": true, "10.0.1.128/25": true, "10.0.0.0/16": true, "10.0.3.0/24": false,
		"10.0.0.0/24": false, "fd00::/48": true, "fd00:0:0:1::/64": false} {
		if got := tk.Overlaps(pfx(s)); got != want {
			t.Errorf("Overlaps(%s) = %v, want %v", s, got, want)
		}
	}
	if tk.Len() != 2 { // the two IPv4 /24s are adjacent and merge
		t.Errorf("Len() = %d, want 2", tk.Len())
	}
	if NewTaken(nil).Overlaps(pfx("0.0.0.0/0")) {
		t.Error("empty set overlaps")
	}
}

func TestAddresses(t *testing.T) {
	for _, tc := range []struct{ s, zero, first string }{
		{"10.244.1.0/24", "10.244.1.0", "10.244.1.1"},
		{"10.244.1.77/24", "10.244.1.0", "10.244.1.1"},
		{"fd00:10:244:1::/64", "fd00:10:244:1::", "fd00:10:244:1::1"},
	} {
		if z := ZeroAddr(pfx(tc.s)); z != addr(tc.zero) {
			t.Errorf("ZeroAddr(%s) = %s", tc.s, z)
		}
		if f := FirstHost(pfx(tc.s)); f != addr(tc.first) {
			t.Errorf("FirstHost(%s) = %s", tc.s, f)
		}
	}
	if !Contains(pfx("10.0.0.0/8"), pfx("10.1.0.0/16")) || Contains(pfx("10.1.0.0/16"), pfx("10.0.0.0/8")) || Contains(pfx("10.0.0.0/8"), pfx("fd00::/8")) {
		t.Error("Contains is wrong")
	}
	if !Overlaps(pfx("10.0.0.0/8"), pfx("10.1.0.0/16")) || Overlaps(pfx("10.0.0.0/16"), pfx("10.1.0.0/16")) {
		t.Error("Overlaps is wrong")
	}
	if !IsAligned(addr("10.0.4.0"), 22) || IsAligned(addr("10.0.5.0"), 22) || !IsAligned(addr("fd00::"), 64) {
		t.Error("IsAligned is wrong")
	}
}

func TestNthAndLast(t *testing.T) {
	for _, tc := range []struct {
		network    string
		bits       int
		i          uint64
		nth, last  string
		nok, lastk bool
	}{
		{"10.244.0.0/16", 24, 1, "10.244.1.0/24", "10.244.254.0/24", true, true},
		{"10.0.0.0/28", 30, 3, "10.0.0.12/30", "10.0.0.0/30", true, true},
		{"10.0.0.0/28", 30, 4, "", "", false, false},
		{"fd00::/56", 64, 1, "fd00:0:0:1::/64", "fd00:0:0:fe::/64", true, true},
		{"0.0.0.0/0", 2, 3, "192.0.0.0/2", "0.0.0.0/2", true, true},
		{"::/0", 2, 1, "4000::/2", "8000::/2", true, true},
	} {
		n, ok := Nth(pfx(tc.network), tc.bits, tc.i)
		if ok != tc.nok || (ok && n.String() != tc.nth) {
			t.Errorf("Nth(%s, %d, %d) = %v, %v", tc.network, tc.bits, tc.i, n, ok)
		}
		l, ok := LastSubnet(pfx(tc.network), tc.bits, tc.i)
		if ok != tc.lastk || (ok && l.String() != tc.last) {
			t.Errorf("LastSubnet(%s, %d, %d) = %v, %v", tc.network, tc.bits, tc.i, l, ok)
		}
	}
}

// FuzzPick checks, for random small pools and taken sets, that Pick never
// panics, returns a pool member that overlaps nothing taken, and reports
// exhaustion only when no member is free.
func FuzzPick(f *testing.F) {
	f.Add(uint32(0x0a000000), uint8(20), uint8(24), []byte{1, 2, 3, 200})
	f.Add(uint32(0xffffff00), uint8(24), uint8(28), []byte{0, 0, 255})
	f.Fuzz(func(t *testing.T, base uint32, nbits, sbits uint8, takenIdx []byte) {
		nbits = 16 + nbits%13
		sbits = nbits + 2 + sbits%3
		network := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(base >> 24), byte(base >> 16), byte(base >> 8), byte(base)}), int(nbits)).Masked()
		first, _ := Nth(network, int(sbits), 0)
		last, _ := LastSubnet(network, int(sbits), 0)
		p, err := NewPool(network, int(sbits), first.Addr(), last.Addr())
		if err != nil {
			t.Fatal(err)
		}
		var taken []netip.Prefix
		for i, b := range takenIdx {
			s, ok := Nth(network, int(sbits)-i%2, uint64(b))
			if ok {
				taken = append(taken, s)
			}
		}
		tk := NewTaken(taken)
		s, err := p.Pick(tk, rand.New(rand.NewPCG(uint64(base), 1)))
		free := 0
		for c := range p.All() {
			if !tk.Overlaps(c) {
				free++
			}
		}
		switch {
		case err != nil && free > 0:
			t.Fatalf("Pick: %v with %d free", err, free)
		case err == nil && (!p.Contains(s) || tk.Overlaps(s)):
			t.Fatalf("Pick = %v: not free", s)
		}
	})
}
