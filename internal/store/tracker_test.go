package store

import (
	"net/netip"
	"testing"

	"github.com/weft-net/weft/internal/lease"
)

func mk(s, ip string) lease.Lease {
	return lease.Lease{Subnet: netip.MustParsePrefix(s), Attrs: lease.Attrs{PublicIP: netip.MustParseAddr(ip)}}
}

func TestTrackerReset(t *testing.T) {
	tr := NewTracker([]lease.Lease{mk("10.5.1.0/24", "1.1.1.1"), mk("10.5.2.0/24", "1.1.1.2"), mk("10.5.3.0/24", "1.1.1.3")})
	evs := tr.Reset([]lease.Lease{mk("10.5.2.0/24", "1.1.1.9"), mk("10.5.3.0/24", "1.1.1.3"), mk("10.5.4.0/24", "1.1.1.4")})
	var got []string
	for _, e := range evs {
		got = append(got, e.Type.String()+" "+e.Lease.Key())
	}
	want := []string{"added 10.5.2.0-24", "added 10.5.4.0-24", "removed 10.5.1.0-24"}
	if len(got) != len(want) {
		t.Fatalf("%v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%v, want %v", got, want)
		}
	}
	if _, ok := tr.Put(mk("10.5.4.0/24", "1.1.1.4")); ok {
		t.Fatal("unchanged put produced an event")
	}
	if _, ok := tr.Remove("10.5.9.0-24"); ok {
		t.Fatal("removing an unknown key produced an event")
	}
}

// A Removed event carries the lease's subnets, read back from its key, for
// every shape of key: IPv4, dual-stack, IPv6 only.
func TestTrackerRemovedKeys(t *testing.T) {
	v6 := netip.MustParsePrefix("fd00:5:1::/64")
	leases := []lease.Lease{mk("10.5.1.0/24", "1.1.1.1"), {Subnet: netip.MustParsePrefix("10.5.2.0/24"), IPv6Subnet: v6},
		{IPv6Subnet: netip.MustParsePrefix("fd00:5:2::/64")}}
	tr := NewTracker(leases)
	for _, l := range leases {
		ev, ok := tr.Remove(l.Key())
		if !ok || ev.Type != lease.Removed || ev.Lease.Key() != l.Key() || ev.Lease.Subnet != l.Subnet || ev.Lease.IPv6Subnet != l.IPv6Subnet {
			t.Errorf("remove %s: %+v %v", l.Key(), ev, ok)
		}
	}
}
