package store

import (
	"fmt"
	"math/rand/v2"
	"net/netip"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/subnet"
)

// SameNode reports whether a and b carry the same node identity for cfg: the
// PublicIP, or the PublicIPv6 on an IPv6-only network.
func SameNode(cfg *config.NetConf, a, b lease.Attrs) bool {
	if cfg.IPv4.Enabled {
		return a.PublicIP.IsValid() && a.PublicIP == b.PublicIP
	}
	return a.PublicIPv6.IsValid() && a.PublicIPv6 == b.PublicIPv6
}

// Fits reports whether l's subnets match cfg: every enabled family has a
// subnet of the configured length inside the network.
func Fits(cfg *config.NetConf, l lease.Lease) bool {
	for _, f := range cfg.Families() {
		s := familySubnet(l, f)
		if !s.IsValid() || s.Bits() != f.SubnetLen || !subnet.Contains(f.Network, s) {
			return false
		}
	}
	return true
}

func familySubnet(l lease.Lease, f config.Family) netip.Prefix {
	if f.Network.Addr().Is4() {
		return l.Subnet
	}
	return l.IPv6Subnet
}

// FindOwn returns, among existing, the lease carrying attrs' identity that
// fits cfg, and the node's other leases, which the caller should delete
// unless they are reservations. When several fit (another writer copied the
// node's address), a reservation wins, then the lease holding the subnets of
// the previous subnet.env (prev, prevV6), then the first listed.
func FindOwn(cfg *config.NetConf, attrs lease.Attrs, prev, prevV6 netip.Prefix, existing []lease.Lease) (own lease.Lease, found bool, stale []lease.Lease) {
	rank := func(l lease.Lease) int {
		r := 0
		if l.Reservation {
			r += 2
		}
		if (prev.IsValid() && l.Subnet == prev.Masked()) || (prevV6.IsValid() && l.IPv6Subnet == prevV6.Masked()) {
			r++
		}
		return r
	}
	for _, l := range existing {
		if !SameNode(cfg, l.Attrs, attrs) {
			continue
		}
		switch {
		case !Fits(cfg, l):
			stale = append(stale, l)
		case !found || rank(l) > rank(own):
			if found {
				stale = append(stale, own)
			}
			own, found = l, true
		default:
			stale = append(stale, l)
		}
	}
	return own, found, stale
}

// PickSubnets chooses the subnets of a new lease: per enabled family, the
// previous subnet when it is in the pool and overlaps no taken subnet, else a
// random free one. The error wraps ErrNoFreeSubnet and names the network and
// how many of its subnets are taken.
func PickSubnets(req AcquireRequest, taken []netip.Prefix, rnd *rand.Rand) (lease.Lease, error) {
	var out lease.Lease
	t := subnet.NewTaken(taken)
	for _, f := range req.Config.Families() {
		pool, err := f.Pool()
		if err != nil {
			return lease.Lease{}, fmt.Errorf("pool of %s: %w", f.Network, err)
		}
		prev := req.Previous
		if !f.Network.Addr().Is4() {
			prev = req.PreviousIPv6
		}
		var s netip.Prefix
		if prev.IsValid() && pool.Contains(prev.Masked()) && !t.Overlaps(prev) {
			s = prev.Masked()
		} else if s, err = pool.Pick(t, rnd); err != nil {
			n := 0
			for _, p := range taken {
				if pool.Contains(p) {
					n++
				}
			}
			return lease.Lease{}, fmt.Errorf("%w: network %s: %d of %d subnets between %s and %s are taken",
				ErrNoFreeSubnet, f.Network, n, pool.Count(), pool.First(), pool.Last())
		}
		if s.Addr().Is4() {
			out.Subnet = s
		} else {
			out.IPv6Subnet = s
		}
	}
	return out, nil
}

// KeySubnets returns the subnets named by a key, both families, for the taken
// set: a key counts as taken whatever its value holds.
func KeySubnets(key string) []netip.Prefix {
	v4, v6, err := lease.ParseKey(key)
	if err != nil {
		return nil
	}
	var out []netip.Prefix
	for _, p := range []netip.Prefix{v4, v6} {
		if p.IsValid() {
			out = append(out, p)
		}
	}
	return out
}

// Decode turns a stored key name and value into a lease and checks it
// against cfg (nil skips the network check): the key must be a subnet key,
// the value flannel's JSON, and each subnet inside the configured network of
// its family. Errors wrap ErrBadLease.
func Decode(cfg *config.NetConf, key string, value []byte, reservation bool) (lease.Lease, error) {
	v4, v6, err := lease.ParseKey(key)
	if err != nil {
		return lease.Lease{}, fmt.Errorf("%w: %w", ErrBadLease, err)
	}
	attrs, err := lease.ParseAttrs(value)
	if err != nil {
		return lease.Lease{}, fmt.Errorf("%w: %w", ErrBadLease, err)
	}
	l := lease.Lease{Subnet: v4, IPv6Subnet: v6, Attrs: attrs, Reservation: reservation}
	if cfg == nil {
		return l, nil
	}
	for _, f := range cfg.Families() {
		s := familySubnet(l, f)
		if !s.IsValid() || !subnet.Contains(f.Network, s) {
			return lease.Lease{}, fmt.Errorf("%w: subnet %s is not inside network %s", ErrBadLease, familyOr(s, key), f.Network)
		}
	}
	return l, nil
}

func familyOr(s netip.Prefix, key string) string {
	if s.IsValid() {
		return s.String()
	}
	return "of " + key
}
