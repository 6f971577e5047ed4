package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/store"
)

func testNetworkConfig(t *testing.T, h Harness) {
	s := h.Store(t, quiet())
	if _, err := s.NetworkConfig(ctxT(t)); !errors.Is(err, store.ErrNoConfig) {
		t.Fatalf("no config: err %v, want ErrNoConfig", err)
	}
	cfg := mustConfig(t, h, s, NetConf)
	if cfg.IPv4.Network != netip.MustParsePrefix("10.5.0.0/16") || cfg.IPv4.SubnetLen != 24 || cfg.Backend.Type != "vxlan" {
		t.Fatalf("config %+v", cfg)
	}
}

func testAcquireNew(t *testing.T, h Harness) {
	s := h.Store(t, quiet())
	cfg := mustConfig(t, h, s, NetConf)
	a := attrs("192.168.10.4")
	l := acquire(t, s, cfg, a)
	pool, _ := cfg.IPv4.Pool()
	if !pool.Contains(l.Subnet) || l.IPv6Subnet.IsValid() || l.Reservation || l.Expiration.IsZero() || !l.Attrs.Equal(a) {
		t.Fatalf("lease %+v", l)
	}
	raw, res, ok := h.Get(t, l.Key())
	want := `{"PublicIP":"192.168.10.4","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"22:56:a3:21:8b:8d"}}`
	if !ok || res || raw != want {
		t.Fatalf("stored %q (reservation %v, present %v), want %s", raw, res, ok, want)
	}
	snap := list(t, s)
	if got := keys(snap.Leases); len(got) != 1 || !got[l.Key()].Attrs.Equal(a) || snap.Revision == 0 {
		t.Fatalf("list %+v", snap)
	}
}

func testAcquireReusesOwn(t *testing.T, h Harness) {
	s := h.Store(t, quiet())
	cfg := mustConfig(t, h, s, NetConf)
	l1 := acquire(t, s, cfg, attrs("192.168.10.4"))
	a2 := attrs("192.168.10.4")
	a2.BackendData = json.RawMessage(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}`)
	l2 := acquire(t, h.Store(t, quiet()), cfg, a2) // a restarted node
	if l2.Key() != l1.Key() || !l2.Attrs.Equal(a2) {
		t.Fatalf("reacquire got %s %+v, want %s", l2.Key(), l2.Attrs, l1.Key())
	}
	if raw, _, _ := h.Get(t, l1.Key()); !strings.Contains(raw, "aa:bb:cc:dd:ee:ff") {
		t.Fatalf("value not updated: %s", raw)
	}
	if n := len(list(t, s).Leases); n != 1 {
		t.Fatalf("%d leases, want 1", n)
	}
}

func testAcquirePrevious(t *testing.T, h Harness) {
	s := h.Store(t, quiet())
	cfg := mustConfig(t, h, s, NetConf)
	prev := netip.MustParsePrefix("10.5.77.0/24")
	l, err := s.AcquireLease(ctxT(t), store.AcquireRequest{Config: cfg, Attrs: attrs("192.168.10.4"), Previous: prev})
	if err != nil || l.Subnet != prev {
		t.Fatalf("got %v %v, want previous %s", l.Subnet, err, prev)
	}
	// Previous subnet taken by someone else: a different one.
	l2, err := s.AcquireLease(ctxT(t), store.AcquireRequest{Config: cfg, Attrs: attrs("192.168.10.5"), Previous: prev})
	if err != nil || l2.Subnet == prev {
		t.Fatalf("got %v %v, want not %s", l2.Subnet, err, prev)
	}
	// Previous subnet outside the pool: ignored.
	out := netip.MustParsePrefix("10.6.1.0/24")
	l3, err := s.AcquireLease(ctxT(t), store.AcquireRequest{Config: cfg, Attrs: attrs("192.168.10.6"), Previous: out})
	if err != nil || !cfg.IPv4.Network.Contains(l3.Subnet.Addr()) {
		t.Fatalf("got %v %v", l3.Subnet, err)
	}
}

// Another writer copied the node's public address into a second lease: on
// restart the node keeps the lease of its previous subnet.env, not whichever
// one is listed first.
func testAcquireDuplicateIdentity(t *testing.T, h Harness) {
	s := h.Store(t, quiet())
	cfg := mustConfig(t, h, s, NetConf)
	for _, prev := range []string{"10.5.3.0/24", "10.5.200.0/24"} {
		h.Put(t, "10.5.3.0-24", `{"PublicIP":"192.168.10.4","BackendType":"vxlan"}`, false)
		h.Put(t, "10.5.200.0-24", `{"PublicIP":"192.168.10.4","BackendType":"vxlan"}`, false)
		p := netip.MustParsePrefix(prev)
		l, err := s.AcquireLease(ctxT(t), store.AcquireRequest{Config: cfg, Attrs: attrs("192.168.10.4"), Previous: p})
		if err != nil || l.Subnet != p {
			t.Fatalf("previous %s: got %v, %v", prev, l.Subnet, err)
		}
		if got := keys(list(t, s).Leases); len(got) != 1 {
			t.Fatalf("previous %s: %d leases left, want 1", prev, len(got))
		}
	}
}

func testAcquireDualStack(t *testing.T, h Harness) {
	s := h.Store(t, quiet())
	cfg := mustConfig(t, h, s, `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/56","Backend":{"Type":"host-gw"}}`)
	a := lease.Attrs{PublicIP: netip.MustParseAddr("192.168.10.4"), PublicIPv6: netip.MustParseAddr("fd99::4"), BackendType: "host-gw"}
	l := acquire(t, s, cfg, a)
	if !l.Subnet.IsValid() || !l.IPv6Subnet.IsValid() || l.IPv6Subnet.Bits() != 64 || !strings.Contains(l.Key(), "&fd00:5:") {
		t.Fatalf("lease %s", l.Key())
	}
	raw, _, _ := h.Get(t, l.Key())
	if raw != `{"PublicIP":"192.168.10.4","PublicIPv6":"fd99::4","BackendType":"host-gw"}` {
		t.Fatalf("stored %s", raw)
	}
	if got := keys(list(t, s).Leases); !got[l.Key()].Attrs.Equal(a) {
		t.Fatalf("list %v", got)
	}
}

func testAcquireReplacesMisfit(t *testing.T, h Harness) {
	s := h.Store(t, quiet())
	cfg := mustConfig(t, h, s, NetConf)
	// A lease of ours from an older config with /26 subnets.
	h.Put(t, "10.5.9.0-26", `{"PublicIP":"192.168.10.4","BackendType":"vxlan"}`, false)
	l := acquire(t, s, cfg, attrs("192.168.10.4"))
	if l.Subnet.Bits() != 24 {
		t.Fatalf("got %s", l.Key())
	}
	if _, _, ok := h.Get(t, "10.5.9.0-26"); ok {
		t.Fatalf("stale lease kept")
	}
}

func testReservation(t *testing.T, h Harness) {
	s := h.Store(t, quiet())
	cfg := mustConfig(t, h, s, `{"Network":"10.5.0.0/28","SubnetLen":30,"SubnetMin":"10.5.0.4","SubnetMax":"10.5.0.8"}`)
	h.Put(t, "10.5.0.4-30", `{"PublicIP":"192.168.10.9"}`, true)
	// Another node never gets the reserved subnet, whatever it asks for.
	other, err := s.AcquireLease(ctxT(t), store.AcquireRequest{Config: cfg, Attrs: attrs("192.168.10.1"),
		Previous: netip.MustParsePrefix("10.5.0.4/30")})
	if err != nil || other.Subnet.String() != "10.5.0.8/30" {
		t.Fatalf("other node got %v %v", other.Subnet, err)
	}
	for restart := range 2 { // stays a reservation across restarts
		node := h.Store(t, quiet())
		l := acquire(t, node, cfg, attrs("192.168.10.9"))
		if l.Key() != "10.5.0.4-30" || !l.Reservation || !l.Expiration.IsZero() {
			t.Fatalf("restart %d: got %+v", restart, l)
		}
		if l, err = node.RenewLease(ctxT(t), l); err != nil || !l.Reservation {
			t.Fatalf("renew reservation: %+v %v", l, err)
		}
		raw, res, ok := h.Get(t, "10.5.0.4-30")
		if !ok || !res || !strings.Contains(raw, `"VtepMAC"`) {
			t.Fatalf("restart %d: stored %s reservation=%v", restart, raw, res)
		}
	}
}

func testExhausted(t *testing.T, h Harness) {
	s := h.Store(t, quiet())
	cfg := mustConfig(t, h, s, `{"Network":"10.5.0.0/28","SubnetLen":30}`) // 2 subnets between min and max
	acquire(t, s, cfg, attrs("192.168.10.1"))
	acquire(t, s, cfg, attrs("192.168.10.2"))
	_, err := s.AcquireLease(ctxT(t), store.AcquireRequest{Config: cfg, Attrs: attrs("192.168.10.3")})
	if !errors.Is(err, store.ErrNoFreeSubnet) || !strings.Contains(err.Error(), "10.5.0.0/28") ||
		!strings.Contains(err.Error(), "2 of 2") {
		t.Fatalf("err %v, want ErrNoFreeSubnet naming the network and 2 of 2 taken", err)
	}
}

func testRaceDistinct(t *testing.T, h Harness) {
	const nodes = 20
	cfg := mustConfig(t, h, h.Store(t, quiet()), NetConf)
	got := make([]lease.Lease, nodes)
	errs := make([]error, nodes)
	stores := make([]store.Store, nodes)
	for i := range stores {
		stores[i] = h.Store(t, quiet())
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range nodes {
		wg.Go(func() {
			<-start
			got[i], errs[i] = stores[i].AcquireLease(ctxT(t), store.AcquireRequest{Config: cfg,
				Attrs: attrs(fmt.Sprintf("192.168.20.%d", i+1))})
		})
	}
	close(start)
	wg.Wait()
	seen := map[netip.Prefix]int{}
	for i, l := range got {
		if errs[i] != nil {
			t.Fatalf("node %d: %v", i, errs[i])
		}
		if j, dup := seen[l.Subnet]; dup {
			t.Fatalf("nodes %d and %d both got %s", j, i, l.Subnet)
		}
		seen[l.Subnet] = i
	}
	if n := len(list(t, stores[0]).Leases); n != nodes {
		t.Fatalf("%d leases stored, want %d", n, nodes)
	}
}

func testRaceSamePublicIP(t *testing.T, h Harness) {
	cfg := mustConfig(t, h, h.Store(t, quiet()), NetConf)
	for round := range 5 {
		s1, s2 := h.Store(t, quiet()), h.Store(t, quiet())
		ip := fmt.Sprintf("192.168.30.%d", round+1)
		var wg sync.WaitGroup
		var e1, e2 error
		wg.Go(func() { _, e1 = s1.AcquireLease(ctxT(t), store.AcquireRequest{Config: cfg, Attrs: attrs(ip)}) })
		wg.Go(func() { _, e2 = s2.AcquireLease(ctxT(t), store.AcquireRequest{Config: cfg, Attrs: attrs(ip)}) })
		wg.Wait()
		if e1 != nil || e2 != nil {
			t.Fatal(e1, e2)
		}
		n := 0
		for _, l := range list(t, s1).Leases {
			if l.Attrs.PublicIP.String() == ip {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("round %d: %d leases carry %s, want 1", round, n, ip)
		}
	}
}

func testRenew(t *testing.T, h Harness) {
	s := h.Store(t, quiet())
	cfg := mustConfig(t, h, s, NetConf)
	l := acquire(t, s, cfg, attrs("192.168.10.4"))
	r, err := s.RenewLease(ctxT(t), l)
	if err != nil || r.Key() != l.Key() || r.Expiration.Before(l.Expiration) || r.Reservation {
		t.Fatalf("renew: %+v %v", r, err)
	}
	if _, res, ok := h.Get(t, l.Key()); !ok || res {
		t.Fatalf("renewed lease became a reservation")
	}
	h.Delete(t, l.Key())
	if _, err := s.RenewLease(ctxT(t), l); !errors.Is(err, store.ErrLeaseNotFound) {
		t.Fatalf("renew deleted: err %v", err)
	}
	// Taken over by another node.
	h.Put(t, l.Key(), `{"PublicIP":"192.168.99.99"}`, false)
	if _, err := s.RenewLease(ctxT(t), l); !errors.Is(err, store.ErrLeaseNotFound) {
		t.Fatalf("renew taken over: err %v", err)
	}
}

// testFlannelValues reads leases exactly as flannel writes them.
func testFlannelValues(t *testing.T, h Harness) {
	s := h.Store(t, quiet())
	cfg := mustConfig(t, h, s, `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/32","Backend":{"Type":"vxlan"}}`)
	h.Put(t, "10.5.34.0-24&fd00:5:34::-64",
		`{"PublicIP":"192.168.10.4","PublicIPv6":"fd99::4","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"22:56:a3:21:8b:8d"},"BackendV6Data":{"VNI":1,"VtepMAC":"22:56:a3:21:8b:8e"}}`, false)
	got := keys(list(t, s).Leases)["10.5.34.0-24&fd00:5:34::-64"]
	if got.Attrs.PublicIPv6.String() != "fd99::4" || string(got.Attrs.BackendV6Data) != `{"VNI":1,"VtepMAC":"22:56:a3:21:8b:8e"}` {
		t.Fatalf("read %+v", got)
	}
	l := acquire(t, s, cfg, got.Attrs) // a weft node taking over a flannel node's lease
	if l.Key() != got.Key() {
		t.Fatalf("took %s, want %s", l.Key(), got.Key())
	}
}
