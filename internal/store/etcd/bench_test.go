package etcd

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/store"
)

const benchLeases = 5000

const benchNetConf = `{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}`

// fill writes n leases in transactions of 100 puts (under etcd's default
// max-txn-ops of 128) and returns the revision before them.
func fill(b *testing.B, h *harness, n int) int64 {
	ctx := context.Background()
	resp, err := h.cli.Get(ctx, "/")
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n; i += 100 {
		var puts []clientv3.Op
		for j := i; j < min(i+100, n); j++ {
			name := fmt.Sprintf("10.%d.%d.0-24", 1+j/256, j%256)
			val := fmt.Sprintf(`{"PublicIP":"172.16.%d.%d","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"22:56:a3:21:%02x:%02x"}}`,
				j/256, j%256, j/256, j%256)
			puts = append(puts, clientv3.OpPut(h.key(name), val))
		}
		if _, err := h.cli.Txn(ctx).Then(puts...).Commit(); err != nil {
			b.Fatal(err)
		}
	}
	return resp.Header.Revision
}

func benchSetup(b *testing.B) (*harness, *Store) {
	c := startEmbedded(b, 1)
	h := newHarness(b, c.Endpoints())
	if _, err := h.cli.Put(context.Background(), h.prefix+"/config", benchNetConf); err != nil {
		b.Fatal(err)
	}
	return h, h.newStore(b, quiet())
}

// BenchmarkAcquire5000 acquires a new lease with 5,000 leases in the store.
func BenchmarkAcquire5000(b *testing.B) {
	h, s := benchSetup(b)
	fill(b, h, benchLeases)
	cfg, err := s.NetworkConfig(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	b.Run("weft", func(b *testing.B) {
		b.ReportAllocs()
		for i := range b.N {
			a := lease.Attrs{PublicIP: netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)}), BackendType: "vxlan"}
			if _, err := s.AcquireLease(context.Background(), store.AcquireRequest{Config: cfg, Attrs: a}); err != nil {
				b.Fatal(err)
			}
		}
	})
	// Baseline: the etcd work an acquire cannot avoid, with no decoding or
	// choice: list the subnets, grant a lease, create one key if absent.
	b.Run("baseline-raw-etcd", func(b *testing.B) {
		b.ReportAllocs()
		ctx := context.Background()
		for i := range b.N {
			if _, err := h.cli.Get(ctx, h.prefix+"/subnets/", clientv3.WithPrefix()); err != nil {
				b.Fatal(err)
			}
			g, err := h.cli.Grant(ctx, 3600)
			if err != nil {
				b.Fatal(err)
			}
			key := h.key(fmt.Sprintf("11.%d.%d.0-24", i>>8, i&255))
			if _, err := h.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
				Then(clientv3.OpPut(key, "{}", clientv3.WithLease(g.ID))).Commit(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkList5000 lists and decodes 5,000 leases.
func BenchmarkList5000(b *testing.B) {
	h, s := benchSetup(b)
	fill(b, h, benchLeases)
	b.Run("weft", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			snap, err := s.ListLeases(context.Background())
			if err != nil || len(snap.Leases) != benchLeases {
				b.Fatalf("%d leases, %v", len(snap.Leases), err)
			}
		}
	})
	// Baseline: the raw range read of the same keys, not decoded.
	b.Run("baseline-raw-get", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			r, err := h.cli.Get(context.Background(), h.prefix+"/subnets/", clientv3.WithPrefix())
			if err != nil || len(r.Kvs) != benchLeases {
				b.Fatalf("%d keys, %v", len(r.Kvs), err)
			}
		}
	})
}

// BenchmarkWatch5000 delivers 5,000 lease events: a watch from the revision
// before 5,000 puts, until the last event arrives.
func BenchmarkWatch5000(b *testing.B) {
	h, s := benchSetup(b)
	if _, err := s.NetworkConfig(context.Background()); err != nil {
		b.Fatal(err)
	}
	rev := fill(b, h, benchLeases)
	b.Run("weft", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			ctx, cancel := context.WithCancel(context.Background())
			ch := make(chan []lease.Event, 64)
			done := make(chan error, 1)
			go func() { done <- s.WatchLeases(ctx, store.Snapshot{Revision: rev}, ch) }()
			for n := 0; n < benchLeases; {
				n += len(<-ch)
			}
			cancel()
			_ = <-done
		}
	})
	// Baseline: a raw etcd watch of the same 5,000 puts, events not decoded.
	b.Run("baseline-raw-watch", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			ctx, cancel := context.WithCancel(context.Background())
			wc := h.cli.Watch(ctx, h.prefix+"/subnets/", clientv3.WithPrefix(), clientv3.WithRev(rev+1))
			for n := 0; n < benchLeases; {
				r := <-wc
				n += len(r.Events)
			}
			cancel()
		}
	})
}
