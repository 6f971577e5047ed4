package store_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/store"
	"github.com/weft-net/weft/internal/store/storetest"
)

// The own lease lost in a store reset while the store has no configuration:
// KeepLease waits for it instead of exiting, then takes the same subnet.
func TestKeepLeaseWaitsForConfigAfterReset(t *testing.T) {
	const netconf = `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`
	f := storetest.NewFake(nil, nil, nil)
	f.SetConfig(netconf)
	cfg, _, err := config.ParseNetConf([]byte(netconf))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req := store.AcquireRequest{Config: cfg, Attrs: lease.Attrs{PublicIP: netip.MustParseAddr("192.168.1.1"), BackendType: "vxlan"}}
	own, err := f.AcquireLease(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan []lease.Event, 1)
	out := make(chan lease.Lease, 1)
	done := make(chan error, 1)
	go func() {
		done <- store.KeepLease(ctx, f, own, store.KeepOptions{Request: req, RetryMin: 10 * time.Millisecond,
			RetryMax: 40 * time.Millisecond, Events: events}, out)
	}()

	// The reset: the store is empty, configuration and leases alike.
	f.SetConfig("")
	f.Delete(own.Key())
	events <- []lease.Event{{Type: lease.Lost, Lease: lease.Lease{Subnet: own.Subnet, Expiration: time.Now().Add(time.Hour)}}}
	select {
	case err := <-done:
		t.Fatalf("KeepLease returned %v while the configuration was missing", err)
	case l := <-out:
		t.Fatalf("KeepLease published %s before the configuration was back", l.Key())
	case <-time.After(500 * time.Millisecond):
	}
	f.SetConfig(netconf)
	written := time.Now()
	select {
	case l := <-out:
		if l.Key() != own.Key() {
			t.Errorf("republished %s, want the same subnet %s", l.Key(), own.Key())
		}
		if _, _, ok := f.Get(own.Key()); !ok {
			t.Errorf("lease %s not in the store", own.Key())
		}
		t.Logf("lease republished %v after the configuration was written", time.Since(written).Round(time.Millisecond))
	case err := <-done:
		t.Fatalf("KeepLease returned %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("lease not republished within 5 s of the configuration")
	}
	cancel()
	_ = <-done
}
