package etcd

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/store"
)

// Expiry reads a lease's grant and expiry from etcd (weft status): a new
// lease was granted now and expires a TTL later; a reservation has neither;
// a lease that is gone is ErrLeaseNotFound.
func TestExpiry(t *testing.T) {
	c := startEmbedded(t, 1)
	h := newHarness(t, c.Endpoints())
	h.SetConfig(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`)
	s := h.newStore(t, quiet())
	ctx := context.Background()
	cfg, err := s.NetworkConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.AcquireLease(ctx, store.AcquireRequest{Config: cfg,
		Attrs: lease.Attrs{PublicIP: netip.MustParseAddr("192.168.1.5"), BackendType: "vxlan"}})
	if err != nil {
		t.Fatal(err)
	}
	renewed, expires, err := s.Expiry(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if d := now.Sub(renewed); d < -2*time.Second || d > 5*time.Second {
		t.Errorf("renewed %v, want about now (%v)", renewed, now)
	}
	if d := expires.Sub(now) - 24*time.Hour; d < -10*time.Second || d > 2*time.Second {
		t.Errorf("expires %v, want about 24 h from now", expires)
	}
	h.Put(t, "10.244.77.0-24", `{"PublicIP":"192.168.1.77"}`, true)
	res := lease.Lease{Subnet: netip.MustParsePrefix("10.244.77.0/24")}
	if r, e, err := s.Expiry(ctx, res); err != nil || !r.IsZero() || !e.IsZero() {
		t.Errorf("reservation: %v %v %v, want zero times", r, e, err)
	}
	h.Delete(t, "10.244.77.0-24")
	if _, _, err := s.Expiry(ctx, res); !errors.Is(err, store.ErrLeaseNotFound) {
		t.Errorf("deleted lease: %v, want ErrLeaseNotFound", err)
	}
}

// The watch's health for weft_store_up: up once the watch runs, down when
// etcd goes away (the client retries inside the watch, which sees nothing;
// the connection's state tells).
func TestWatchHealth(t *testing.T) {
	c := startEmbedded(t, 1)
	h := newHarness(t, c.Endpoints())
	h.SetConfig(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`)
	s := h.newStore(t, quiet())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan []lease.Event, 16)
	go func() { _ = s.WatchLeases(ctx, store.Snapshot{}, out) }()
	wait := func(want bool, what string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for s.WatchHealth().Up() != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: Up() = %v after 20 s", what, !want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	wait(true, "the watch running")
	c.Close()
	wait(false, "etcd gone")
}
