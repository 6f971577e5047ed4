package etcd

import (
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weft-net/weft/internal/lease"
)

// The etcd a watch follows restarted from an empty data directory: the
// watch notices within a few checks, sends every lease it had as lost with
// the time it would have expired, and delivers a lease written afterwards.
func TestResetEmbedded(t *testing.T) {
	c := startEmbedded(t, 1)
	testReset(t, c.Endpoints(), func() {
		if err := c.Stop(0); err != nil {
			t.Fatal(err)
		}
		if err := c.Wipe(0); err != nil {
			t.Fatal(err)
		}
		if err := c.Restart(0); err != nil {
			t.Fatal(err)
		}
	})
}

func TestResetEtcdServerBinary(t *testing.T) {
	bin := etcdBinary()
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("%s not found (apt-get install etcd-server, or set WEFT_ETCD_BINARY): %v", bin, err)
	}
	p := newEtcdProc(t, bin)
	p.start(t)
	testReset(t, []string{p.client}, func() {
		p.stop()
		p.wipe(t)
		p.start(t)
	})
}

func testReset(t *testing.T, endpoints []string, reset func()) {
	const check = 300 * time.Millisecond
	h := newHarness(t, endpoints)
	h.SetConfig(t, faultNetConf)
	s, err := New(Options{Endpoints: endpoints, Prefix: h.prefix, Logger: quiet(), ResetCheckEvery: check})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ch := watchAll(t, s)
	// A peer on a 600 s lease, then enough churn that the revision is well
	// past what the emptied etcd reaches before the test writes again.
	g, err := h.cli.Grant(tctx(t), 600)
	if err != nil {
		t.Fatal(err)
	}
	granted := time.Now()
	if _, err := h.cli.Put(tctx(t), h.key("10.5.50.0-24"), `{"PublicIP":"192.168.5.50"}`, clientv3.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	churn := ops(0, 40)
	apply(t, h.cli, h.prefix, churn)
	collect(t, ch, append([]op{{expect: "added 10.5.50.0-24"}}, churn...), 15*time.Second)
	live := map[string]bool{"10.5.50.0-24": true}
	for _, o := range churn {
		live[o.name] = o.value != ""
	}
	var want []string
	for k, ok := range live {
		if ok {
			want = append(want, "lost "+k)
		}
	}
	sort.Strings(want)
	time.Sleep(5 * check) // the checks learn the leases' expiries meanwhile

	reset()
	restarted := time.Now()
	var got []string
	byKey := map[string]lease.Lease{}
	deadline := time.After(20 * time.Second)
	for len(got) < len(want) {
		select {
		case b := <-ch:
			for _, ev := range b {
				got = append(got, ev.Type.String()+" "+ev.Lease.Key())
				byKey[ev.Lease.Key()] = ev.Lease
			}
		case <-deadline:
			t.Fatalf("after etcd restarted empty, got %v within 20 s; want %v", got, want)
		}
	}
	sort.Strings(got)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("after etcd restarted empty: got %v, want %v", got, want)
	}
	t.Logf("reset noticed %v after etcd served again (check every %v)", time.Since(restarted).Round(time.Millisecond), check)
	// The expiry is the one etcd gave while the lease existed (TimeToLive
	// rounds down to seconds; the watch adds one), not the reset time plus
	// the store's 24 h.
	if exp := byKey["10.5.50.0-24"].Expiration; exp.Before(granted.Add(600*time.Second)) || exp.After(granted.Add(602*time.Second)) {
		t.Errorf("lost lease expires at %v, want about %v", exp, granted.Add(600*time.Second))
	}

	// The operator writes the configuration again; a lease written then is
	// delivered.
	h.SetConfig(t, faultNetConf)
	apply(t, h.cli, h.prefix, []op{{name: "10.5.60.0-24", value: `{"PublicIP":"192.168.5.60"}`}})
	collect(t, ch, []op{{expect: "added 10.5.60.0-24"}}, 10*time.Second)
	// And a deletion after the reset is an ordinary removal.
	apply(t, h.cli, h.prefix, []op{{name: "10.5.60.0-24"}})
	collect(t, ch, []op{{expect: "removed 10.5.60.0-24"}}, 10*time.Second)
}

// What counts as a reset, without etcd.
func TestResetCheckObserve(t *testing.T) {
	type answer struct {
		cluster               uint64
		rev, created, applied int64
		reset                 bool
	}
	for name, answers := range map[string][]answer{
		"steady":                 {{1, 10, 2, 10, false}, {1, 12, 2, 11, false}, {1, 12, 2, 12, false}},
		"revision back":          {{1, 50, 2, 50, false}, {1, 3, 0, 50, true}},
		"revision back, no read": {{1, 50, 2, 0, false}, {1, 49, 2, 0, true}},
		"behind the watch":       {{1, 10, 2, 40, true}},
		"cluster ID changed":     {{1, 50, 2, 50, false}, {2, 60, 2, 50, true}},
		"config gone, then back": {{1, 50, 2, 50, false}, {1, 51, 0, 50, false}, {1, 80, 70, 50, true}},
		"config first written":   {{1, 50, 0, 50, false}, {1, 51, 51, 50, false}, {1, 52, 51, 50, false}},
	} {
		var r resetCheck
		for i, a := range answers {
			if why := r.observe(a.cluster, a.rev, a.created, a.applied); (why != "") != a.reset {
				t.Errorf("%s: answer %d: reset %q, want %v", name, i, why, a.reset)
			}
		}
	}
}
