package storetest

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/store"
)

// Harness is one empty store under test plus the raw access another writer
// (flannel, an operator with etcdctl) has to it. Names are key names under
// subnets/ ("10.5.34.0-24").
type Harness interface {
	// Store returns a new client of the store, as one node would hold,
	// logging to log.
	Store(t *testing.T, log *slog.Logger) store.Store
	// SetConfig writes the network configuration (net-conf.json text).
	SetConfig(t *testing.T, netconf string)
	// Put writes a raw value: a reservation (no expiry) or a leased entry.
	Put(t *testing.T, name, value string, reservation bool)
	// Delete removes an entry; Expire ends it as its TTL running out would.
	Delete(t *testing.T, name string)
	Expire(t *testing.T, name string)
	// Get reads an entry raw.
	Get(t *testing.T, name string) (value string, reservation, ok bool)
	// Compact drops the store's change history up to now.
	Compact(t *testing.T)
}

// Factory returns a fresh, empty Harness for one test.
type Factory func(t *testing.T) Harness

// NetConf is the network configuration most tests use.
const NetConf = `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`

// Run runs the conformance suite.
func Run(t *testing.T, newHarness Factory) {
	tests := []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"NetworkConfig", testNetworkConfig},
		{"AcquireNew", testAcquireNew},
		{"AcquireReusesOwn", testAcquireReusesOwn},
		{"AcquirePrevious", testAcquirePrevious},
		{"AcquireDuplicateIdentity", testAcquireDuplicateIdentity},
		{"AcquireDualStack", testAcquireDualStack},
		{"AcquireReplacesMisfit", testAcquireReplacesMisfit},
		{"Reservation", testReservation},
		{"Exhausted", testExhausted},
		{"RaceDistinct", testRaceDistinct},
		{"RaceSamePublicIP", testRaceSamePublicIP},
		{"Renew", testRenew},
		{"FlannelValues", testFlannelValues},
		{"FlannelValuesPerBackend", testFlannelValuesPerBackend},
		{"Watch", testWatch},
		{"WatchFromZero", testWatchFromZero},
		{"WatchCompacted", testWatchCompacted},
		{"BadInput", testBadInput},
		{"KeepLeaseDeleted", testKeepLeaseDeleted},
		{"KeepLeaseExpired", testKeepLeaseExpired},
		{"KeepLeaseRenews", testKeepLeaseRenews},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newHarness(t)) })
	}
}

// Helpers shared by the tests.

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func mustConfig(t *testing.T, h Harness, s store.Store, netconf string) *config.NetConf {
	t.Helper()
	h.SetConfig(t, netconf)
	cfg, err := s.NetworkConfig(ctxT(t))
	if err != nil {
		t.Fatalf("NetworkConfig: %v", err)
	}
	return cfg
}

func attrs(ip string) lease.Attrs {
	return lease.Attrs{PublicIP: netip.MustParseAddr(ip), BackendType: "vxlan",
		BackendData: []byte(`{"VNI":1,"VtepMAC":"22:56:a3:21:8b:8d"}`)}
}

func acquire(t *testing.T, s store.Store, cfg *config.NetConf, a lease.Attrs) lease.Lease {
	t.Helper()
	l, err := s.AcquireLease(ctxT(t), store.AcquireRequest{Config: cfg, Attrs: a})
	if err != nil {
		t.Fatalf("AcquireLease(%s): %v", a.PublicIP, err)
	}
	return l
}

func list(t *testing.T, s store.Store) store.Snapshot {
	t.Helper()
	snap, err := s.ListLeases(ctxT(t))
	if err != nil {
		t.Fatalf("ListLeases: %v", err)
	}
	return snap
}

func keys(leases []lease.Lease) map[string]lease.Lease {
	m := map[string]lease.Lease{}
	for _, l := range leases {
		m[l.Key()] = l
	}
	return m
}

// watcher runs WatchLeases in the background and collects events.
type watcher struct {
	t      *testing.T
	ch     chan []lease.Event
	errc   chan error
	cancel context.CancelFunc
}

func startWatch(t *testing.T, s store.Store, from store.Snapshot) *watcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{t: t, ch: make(chan []lease.Event, 1024), errc: make(chan error, 1), cancel: cancel}
	go func() { w.errc <- s.WatchLeases(ctx, from, w.ch) }()
	t.Cleanup(func() { cancel(); _ = <-w.errc }) // the watch ends with the context's error
	return w
}

// next collects events until n have arrived or the timeout passes.
func (w *watcher) next(n int, timeout time.Duration) []lease.Event {
	w.t.Helper()
	var got []lease.Event
	deadline := time.After(timeout)
	for len(got) < n {
		select {
		case b := <-w.ch:
			if len(b) == 0 {
				w.t.Errorf("empty batch")
			}
			got = append(got, b...)
		case err := <-w.errc:
			w.t.Fatalf("watch ended: %v", err)
		case <-deadline:
			w.t.Fatalf("got %d events %s, want %d", len(got), evString(got), n)
		}
	}
	return got
}

// quietFor checks that no event arrives for d.
func (w *watcher) quietFor(d time.Duration) {
	w.t.Helper()
	select {
	case b := <-w.ch:
		w.t.Fatalf("unexpected events %s", evString(b))
	case <-time.After(d):
	}
}

func evString(evs []lease.Event) string {
	var b bytes.Buffer
	for _, e := range evs {
		b.WriteString(e.Type.String() + " " + e.Lease.Key() + "; ")
	}
	return b.String()
}

// logCounter counts log records that mention a key.
type logCounter struct {
	mu   sync.Mutex
	recs []string
}

func (c *logCounter) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.recs = append(c.recs, string(p))
		return len(p), nil
	}), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func (c *logCounter) count(sub string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, r := range c.recs {
		if bytes.Contains([]byte(r), []byte(sub)) {
			n++
		}
	}
	return n
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
