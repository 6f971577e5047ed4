package storetest

import (
	"context"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/store"
)

const waitEvents = 15 * time.Second

func wantEvents(t *testing.T, got []lease.Event, want ...string) {
	t.Helper()
	var w []string
	for _, e := range got {
		w = append(w, e.Type.String()+" "+e.Lease.Key())
	}
	if len(w) != len(want) {
		t.Fatalf("events %v, want %v", w, want)
	}
	for i := range w {
		if w[i] != want[i] {
			t.Fatalf("events %v, want %v", w, want)
		}
	}
}

func testWatch(t *testing.T, h Harness) {
	s := h.Store(t, quiet())
	cfg := mustConfig(t, h, s, NetConf)
	w := startWatch(t, s, list(t, s))
	a, err := s.AcquireLease(ctxT(t), store.AcquireRequest{Config: cfg, Attrs: attrs("192.168.10.1"),
		Previous: netip.MustParsePrefix("10.5.1.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	wantEvents(t, w.next(1, waitEvents), "added 10.5.1.0-24")
	h.Put(t, "10.5.2.0-24", `{"PublicIP":"192.168.10.2","BackendType":"vxlan"}`, false)
	h.Put(t, "10.5.2.0-24", `{"PublicIP":"192.168.10.2","BackendType":"vxlan","BackendData":{"VNI":2}}`, false)
	h.Delete(t, "10.5.2.0-24")
	got := w.next(3, waitEvents)
	wantEvents(t, got, "added 10.5.2.0-24", "added 10.5.2.0-24", "removed 10.5.2.0-24")
	if string(got[1].Lease.Attrs.BackendData) != `{"VNI":2}` {
		t.Fatalf("update carries %s", got[1].Lease.Attrs.BackendData)
	}
	if _, err := s.RenewLease(ctxT(t), a); err != nil { // same value: no event
		t.Fatal(err)
	}
	w.quietFor(300 * time.Millisecond)
}

func testWatchFromZero(t *testing.T, h Harness) {
	s := h.Store(t, quiet())
	mustConfig(t, h, s, NetConf)
	h.Put(t, "10.5.1.0-24", `{"PublicIP":"192.168.10.1"}`, false)
	h.Put(t, "10.5.2.0-24", `{"PublicIP":"192.168.10.2"}`, true)
	w := startWatch(t, s, store.Snapshot{})
	got := w.next(2, waitEvents)
	wantEvents(t, got, "added 10.5.1.0-24", "added 10.5.2.0-24")
	if got[0].Lease.Reservation || !got[1].Lease.Reservation {
		t.Fatalf("reservation flags %v %v", got[0].Lease.Reservation, got[1].Lease.Reservation)
	}
	h.Delete(t, "10.5.1.0-24")
	wantEvents(t, w.next(1, waitEvents), "removed 10.5.1.0-24")
}

func testWatchCompacted(t *testing.T, h Harness) {
	s := h.Store(t, quiet())
	mustConfig(t, h, s, NetConf)
	h.Put(t, "10.5.1.0-24", `{"PublicIP":"192.168.10.1"}`, false)
	h.Put(t, "10.5.2.0-24", `{"PublicIP":"192.168.10.2"}`, false)
	h.Put(t, "10.5.4.0-24", `{"PublicIP":"192.168.10.4"}`, false)
	snap := list(t, s)
	h.Put(t, "10.5.3.0-24", `{"PublicIP":"192.168.10.3"}`, false)
	h.Delete(t, "10.5.1.0-24")
	h.Put(t, "10.5.2.0-24", `{"PublicIP":"192.168.10.2","BackendType":"udp"}`, false)
	h.Put(t, "10.5.4.0-24", `{"PublicIP":"192.168.10.4"}`, false) // rewritten, unchanged
	h.Compact(t)
	w := startWatch(t, s, snap)
	wantEvents(t, w.next(3, waitEvents), "added 10.5.2.0-24", "added 10.5.3.0-24", "removed 10.5.1.0-24")
	h.Delete(t, "10.5.3.0-24")
	wantEvents(t, w.next(1, waitEvents), "removed 10.5.3.0-24")
	w.quietFor(200 * time.Millisecond)
}

func testBadInput(t *testing.T, h Harness) {
	var logs logCounter
	s := h.Store(t, logs.logger())
	cfg := mustConfig(t, h, s, NetConf)
	h.Put(t, "10.5.1.0-24", `not json`, false)
	h.Put(t, "not-a-subnet", `{"PublicIP":"192.168.10.1"}`, false)
	h.Put(t, "10.9.1.0-24", `{"PublicIP":"192.168.10.1"}`, false)
	h.Put(t, "10.5.2.0-24", `{"PublicIP":"192.168.10.2"}`, false)
	for range 3 {
		if got := keys(list(t, s).Leases); len(got) != 1 {
			t.Fatalf("list %v, want only 10.5.2.0-24", got)
		}
	}
	for _, k := range []string{"10.5.1.0-24", "not-a-subnet", "10.9.1.0-24"} {
		if n := logs.count(k); n != 1 {
			t.Errorf("%s logged %d times, want once", k, n)
		}
	}
	// A key whose value is bad is still taken.
	l, err := s.AcquireLease(ctxT(t), store.AcquireRequest{Config: cfg, Attrs: attrs("192.168.10.7"),
		Previous: netip.MustParsePrefix("10.5.1.0/24")})
	if err != nil || l.Subnet.String() == "10.5.1.0/24" {
		t.Fatalf("acquire got %v %v", l.Subnet, err)
	}
	// Two keys other than the one acquire picked at random: a bad value
	// that was never a lease, and a new good lease.
	var free []string
	for _, k := range []string{"10.5.3.0-24", "10.5.4.0-24", "10.5.5.0-24"} {
		if k != l.Key() {
			free = append(free, k)
		}
	}
	bad, added := free[0], free[1]
	w := startWatch(t, s, list(t, s))
	h.Put(t, bad, `{"PublicIP":`, false)
	h.Put(t, bad, `{"PublicIP":`, false)
	h.Put(t, "10.5.2.0-24", `[1,2]`, false) // a good lease turns bad: removed
	h.Put(t, added, `{"PublicIP":"192.168.10.4"}`, false)
	wantEvents(t, w.next(2, waitEvents), "removed 10.5.2.0-24", "added "+added)
	if n := logs.count(bad); n != 1 {
		t.Errorf("%s logged %d times, want once", bad, n)
	}
}

func keep(t *testing.T, s store.Store, cfg *config.NetConf, own lease.Lease, opts store.KeepOptions) (chan lease.Lease, func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan lease.Lease, 4)
	errc := make(chan error, 1)
	opts.Request.Config = cfg
	if opts.RetryMin == 0 {
		opts.RetryMin = 50 * time.Millisecond
	}
	go func() { errc <- store.KeepLease(ctx, s, own, opts, out) }()
	stop := func() error { cancel(); return <-errc }
	t.Cleanup(func() { _ = stop })
	return out, stop
}

func testKeepLeaseLost(t *testing.T, h Harness, lose func(name string)) {
	s := h.Store(t, quiet())
	cfg := mustConfig(t, h, s, NetConf)
	own := acquire(t, s, cfg, attrs("192.168.10.4"))
	out, stop := keep(t, s, cfg, own, store.KeepOptions{})
	time.Sleep(300 * time.Millisecond) // let the keeper's watch start
	lose(own.Key())
	select {
	case l := <-out:
		if l.Key() != own.Key() || l.Reservation {
			t.Fatalf("re-acquired %+v, want %s", l, own.Key())
		}
	case <-time.After(waitEvents):
		t.Fatal("lease not re-acquired")
	}
	if raw, _, ok := h.Get(t, own.Key()); !ok || !containsIP(raw, "192.168.10.4") {
		t.Fatalf("stored %q", raw)
	}
	if err := stop(); err != context.Canceled {
		t.Fatalf("KeepLease returned %v, want context.Canceled", err)
	}
}

func containsIP(raw, ip string) bool {
	a, err := lease.ParseAttrs([]byte(raw))
	return err == nil && a.PublicIP.String() == ip
}

func testKeepLeaseDeleted(t *testing.T, h Harness) {
	testKeepLeaseLost(t, h, func(name string) { h.Delete(t, name) })
}

func testKeepLeaseExpired(t *testing.T, h Harness) {
	testKeepLeaseLost(t, h, func(name string) { h.Expire(t, name) })
}

func testKeepLeaseRenews(t *testing.T, h Harness) {
	s := h.Store(t, quiet())
	cfg := mustConfig(t, h, s, NetConf)
	own := acquire(t, s, cfg, attrs("192.168.10.4"))
	var renewed atomic.Int32
	// A margin longer than the lease: renew every RetryMin.
	_, stop := keep(t, s, cfg, own, store.KeepOptions{Margin: 1000 * time.Hour, RetryMin: 100 * time.Millisecond,
		Renewed: func(l lease.Lease) {
			if l.Key() == own.Key() && !l.Reservation {
				renewed.Add(1)
			}
		}})
	deadline := time.Now().Add(waitEvents)
	for renewed.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if renewed.Load() < 3 {
		t.Fatalf("renewed %d times, want 3", renewed.Load())
	}
	if err := stop(); err != context.Canceled {
		t.Fatalf("KeepLease returned %v", err)
	}
	if _, res, ok := h.Get(t, own.Key()); !ok || res {
		t.Fatalf("lease gone or became a reservation after renewals")
	}
}
