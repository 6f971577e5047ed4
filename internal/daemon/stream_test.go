//go:build linux

package daemon

import (
	"context"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/store"
)

// streamingStore is a store.StreamLister over another store: it hands the
// leases over one per part, and records whether subnet.env (written at the
// end of the daemon's set-up) existed when the list was requested.
type streamingStore struct {
	store.Store
	file      string
	requested atomic.Int32
	sawFile   atomic.Bool
}

func (s *streamingStore) ListLeasesStream(ctx context.Context, part func([]lease.Lease)) (store.Snapshot, error) {
	s.requested.Add(1)
	_, err := os.Stat(s.file)
	s.sawFile.Store(err == nil)
	snap, err := s.ListLeases(ctx)
	if err != nil {
		return snap, err
	}
	for _, l := range snap.Leases {
		part([]lease.Lease{l})
	}
	return snap, nil
}

// With a store.StreamLister the start-up list is requested as soon as the
// own lease is known, before the rest of the set-up (the device's address,
// the rules, subnet.env), and its parts program every peer.
func TestFakeStreamedListStartsEarly(t *testing.T) {
	n := newFakeNode(t, testNetConf("vxlan"))
	n.lease("10.244.5.0/24", "192.168.100.15", "0a:00:00:00:00:05", "vxlan")
	n.lease("10.244.6.0/24", "192.168.100.16", "0a:00:00:00:00:06", "vxlan")
	o, err := config.ParseOptions([]string{"--subnet-file", n.file}, func(string) (string, bool) { return "", false }, nil)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st := &streamingStore{Store: n.st.Client(log), file: n.file}
	launch(t, o, Deps{Logger: log, Store: st, Backends: backends(), Kernel: n.k,
		NewRules:    func(*config.NetConf) (Rules, error) { return n.rules, nil },
		ResyncEvery: time.Hour}, logs, n.file, 5*time.Second, nil)
	want := dumpOf(fakeVXLANPeer("10.244.5.0/24", "0a:00:00:00:00:05", "192.168.100.15"),
		fakeVXLANPeer("10.244.6.0/24", "0a:00:00:00:00:06", "192.168.100.16"))
	if got := n.k.Dump(); got != want {
		t.Fatalf("kernel after start-up =\n%s\nwant\n%s", got, want)
	}
	if st.requested.Load() != 1 || st.sawFile.Load() {
		t.Errorf("list requested %d times, subnet.env already written: %v; want once, before it", st.requested.Load(), st.sawFile.Load())
	}
}
