//go:build linux

package daemon

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/metrics"

	"github.com/weft-net/weft/internal/testenv"
)

// scrape serves r's /metrics once and parses it as Prometheus does.
func scrape(t *testing.T, r *running) metrics.Families {
	t.Helper()
	rec := httptest.NewRecorder()
	r.m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Result().Body)
	fams, err := metrics.ParseText(body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// The metrics say what the kernel and the store say: weft_peers is the
// peers' routes; a lease of another backend is counted as ignored; a new
// lease adds one observation to the lease-to-kernel histogram; a route
// deleted by hand is a repair; the own lease's expiry and the store's watch
// are there. The scrape is the real handler's text, parsed as Prometheus
// parses it.
func TestMetrics(t *testing.T) {
	n := newNode(t, "192.168.100.11")
	c := newCluster(t, testNetConf("vxlan"))
	c.peerLease(t, "10.244.5.0/24", "192.168.100.15", "0a:00:00:00:00:05", "vxlan")
	c.peerLease(t, "10.244.6.0/24", "192.168.100.16", "0a:00:00:00:00:06", "vxlan")
	c.peerLease(t, "10.244.7.0/24", "192.168.100.17", "0a:00:00:00:00:07", "host-gw")
	d := startDaemon(t, n, c, tempFile(t, "subnet.env"))

	fams := scrape(t, d)
	routes := strings.Count(n.kernel(t), "dev flannel.1 onlink")
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"weft_peers", map[string]string{"backend": "vxlan"}, float64(routes)},
		{"weft_peer_leases_ignored_total", map[string]string{"reason": "backend-type"}, 1},
		{"weft_reconcile_writes_total", map[string]string{"object": "route", "op": "add"}, 2},
		{"weft_reconcile_writes_total", map[string]string{"object": "fdb", "op": "add"}, 2},
		{"weft_reconcile_repairs_total", nil, 0},
		{"weft_reconcile_errors_total", nil, 0},
		{"weft_build_info", map[string]string{"version": "test"}, 1},
	} {
		if got := fams.Value(tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	testenv.WaitFor(t, 2*time.Second, "the store's watch up", func() bool { return scrape(t, d).Value("weft_store_up", nil) == 1 })
	if routes != 2 {
		t.Errorf("%d peer routes in the kernel, want 2", routes)
	}
	if exp := fams.Value("weft_lease_expiry_timestamp_seconds", nil); exp < float64(time.Now().Add(time.Hour).Unix()) {
		t.Errorf("weft_lease_expiry_timestamp_seconds = %v, want the own lease's expiry, hours ahead", exp)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "weft_lease_renewals_total",
		"weft_store_watch_restarts_total", "weft_lease_to_kernel_seconds"} {
		if fams[name] == nil {
			t.Errorf("%s is missing from the scrape", name)
		}
	}

	// A new lease: one more observation, and a third peer.
	h0 := fams.Value("weft_lease_to_kernel_seconds", nil)
	c.peerLease(t, "10.244.3.0/24", "192.168.100.13", "0a:00:00:00:00:03", "vxlan")
	testenv.WaitFor(t, time.Second, "the new lease observed", func() bool {
		f := scrape(t, d)
		return f.Value("weft_lease_to_kernel_seconds", nil) == h0+1 && f.Value("weft_peers", nil) == 3
	})
	// A route deleted by hand: repaired, and counted.
	sh(t, "ip", "-n", n.name, "route", "del", "10.244.5.0/24")
	testenv.WaitFor(t, time.Second, "the repair counted", func() bool {
		return testutil.ToFloat64(d.m.Repairs.WithLabelValues("route")) == 1 &&
			strings.Contains(n.kernel(t), "10.244.5.0/24 via 10.244.5.0 dev flannel.1 onlink")
	})
}

// The minute's summary is one info line when anything changed, and none
// when nothing did.
func TestMinuteSummary(t *testing.T) {
	logs := &logBuffer{}
	dm := &Daemon{log: slog.New(slog.NewTextHandler(logs, nil)), peers: map[string]lease.Lease{"a": {}, "b": {}}, bad: map[string]string{}}
	dm.summarize()
	if logs.String() != "" {
		t.Fatalf("a quiet minute logged %q", logs.String())
	}
	dm.minute = minuteSummary{added: 2, removed: 1, repairs: 3}
	dm.summarize()
	want := `msg="last minute" peers=2 peers-added=2 peers-removed=1 repairs=3 write-errors=0`
	if !strings.Contains(logs.String(), want) {
		t.Errorf("summary %q, want %q", logs.String(), want)
	}
	n := len(logs.String())
	dm.summarize()
	if len(logs.String()) != n {
		t.Error("the next minute repeated the summary")
	}
}
