package metrics

import (
	"encoding/json"
	"io"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

func gatherText(t testing.TB, m *Metrics) (string, Families) {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Result().Body)
	fams, err := ParseText(body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body), fams
}

// The public contract: every documented name is there with its type and its
// labels, before anything happened (zero-valued series included), and the
// data path and store families appear once their sources are set.
func TestNamesTypesLabels(t *testing.T) {
	m := New("1.2.3")
	m.Peers.WithLabelValues("vxlan").Set(3)
	m.SetStore(func() (bool, uint64) { return true, 2 })
	m.SetDataPath(func() *DataPath {
		return &DataPath{Encap: "udp", RxPackets: 5, TxPackets: 6, RxBytes: 500, TxBytes: 600,
			Drops: map[string]uint64{"unknown-source": 7, "spoofed": 0}}
	})
	_, fams := gatherText(t, m)
	want := map[string]struct {
		typ    dto.MetricType
		labels string
	}{
		"weft_peers":                          {dto.MetricType_GAUGE, "backend"},
		"weft_peer_leases_ignored_total":      {dto.MetricType_COUNTER, "reason"},
		"weft_reconcile_writes_total":         {dto.MetricType_COUNTER, "object,op"},
		"weft_reconcile_repairs_total":        {dto.MetricType_COUNTER, "object"},
		"weft_reconcile_errors_total":         {dto.MetricType_COUNTER, ""},
		"weft_lease_to_kernel_seconds":        {dto.MetricType_HISTOGRAM, ""},
		"weft_lease_expiry_timestamp_seconds": {dto.MetricType_GAUGE, ""},
		"weft_lease_renewals_total":           {dto.MetricType_COUNTER, "result"},
		"weft_store_up":                       {dto.MetricType_GAUGE, ""},
		"weft_store_watch_restarts_total":     {dto.MetricType_COUNTER, ""},
		"weft_datapath_packets_total":         {dto.MetricType_COUNTER, "direction,encap"},
		"weft_datapath_bytes_total":           {dto.MetricType_COUNTER, "direction,encap"},
		"weft_datapath_drops_total":           {dto.MetricType_COUNTER, "encap,reason"},
		"weft_build_info":                     {dto.MetricType_GAUGE, "goversion,version"},
	}
	for name, w := range want {
		f := fams[name]
		if f == nil {
			t.Errorf("%s missing", name)
			continue
		}
		if f.GetType() != w.typ {
			t.Errorf("%s is a %s, want %s", name, f.GetType(), w.typ)
		}
		var names []string
		for _, l := range f.Metric[0].Label {
			names = append(names, l.GetName())
		}
		if got := strings.Join(names, ","); got != w.labels {
			t.Errorf("%s has labels %q, want %q", name, got, w.labels)
		}
	}
	for name := range fams {
		if strings.HasPrefix(name, "weft_") {
			if _, ok := want[name]; !ok {
				t.Errorf("%s is not in the documented list (docs/observability.md and this test)", name)
			}
		}
	}
	if f := fams["weft_lease_to_kernel_seconds"]; f != nil {
		b := f.Metric[0].Histogram.Bucket
		n := len(LeaseToKernelBuckets())
		if len(b) != n+1 || b[0].GetUpperBound() != 0.0001 || b[n-1].GetUpperBound() != 10 { // and +Inf
			t.Errorf("histogram buckets %v, want 100 µs to 10 s", b)
		}
	}
	if fams["go_goroutines"] == nil || fams["process_resident_memory_bytes"] == nil {
		t.Error("the Go and process collectors are missing")
	}
}

// Two Metrics do not share anything (no package globals): each registry
// holds only its own values.
func TestIndependentRegistries(t *testing.T) {
	a, b := New("a"), New("b")
	a.WriteErrors.Add(3)
	_, fb := gatherText(t, b)
	if v := fb["weft_reconcile_errors_total"].Metric[0].Counter.GetValue(); v != 0 {
		t.Errorf("b sees a's errors: %v", v)
	}
}

// A scrape while 1,000 peers churn: the daemon's updates (counter adds,
// gauge sets, histogram observations) and the scrapes run at once without
// either waiting for the other; the benchmark reports the scrape's cost.
func BenchmarkScrapeUnderChurn(b *testing.B) {
	m := New("bench")
	m.SetDataPath(func() *DataPath {
		return &DataPath{Encap: "udp", Drops: map[string]uint64{"unknown-source": 1}}
	})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		route := m.Writes.WithLabelValues("route", "add")
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			m.Peers.WithLabelValues("vxlan").Set(float64(1000 + i%2))
			route.Inc()
			m.LeaseToKernel.Observe(0.001)
		}
	}()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/metrics", nil)
	h := m.Handler()
	b.ResetTimer()
	for b.Loop() {
		rec.Body.Reset()
		h.ServeHTTP(rec, req)
	}
	b.StopTimer()
	close(stop)
	wg.Wait()
}

// The daemon's side under scrapes: one peer's worth of updates (a gauge set,
// a counter add, a histogram observation), with no scrape running and with
// scrapes back to back. The two should cost about the same: a scrape takes
// no lock an update waits for.
func BenchmarkUpdates(b *testing.B) {
	for _, scraping := range []bool{false, true} {
		name := "idle"
		if scraping {
			name = "scraping"
		}
		b.Run(name, func(b *testing.B) {
			m := New("bench")
			stop := make(chan struct{})
			var wg sync.WaitGroup
			if scraping {
				wg.Add(1)
				go func() {
					defer wg.Done()
					h, req := m.Handler(), httptest.NewRequest("GET", "/metrics", nil)
					for {
						select {
						case <-stop:
							return
						default:
						}
						h.ServeHTTP(httptest.NewRecorder(), req)
					}
				}()
			}
			peers, route := m.Peers.WithLabelValues("vxlan"), m.Writes.WithLabelValues("route", "add")
			for i := 0; b.Loop(); i++ {
				peers.Set(float64(i))
				route.Inc()
				m.LeaseToKernel.Observe(0.001)
			}
			close(stop)
			wg.Wait()
		})
	}
}

// The Grafana dashboard in deploy/grafana references only metrics weftd
// serves: every weft_ name in a panel's query (less a histogram's _bucket,
// _sum or _count) is a family of a full scrape.
func TestDashboardMetricsExist(t *testing.T) {
	data, err := os.ReadFile("../../deploy/grafana/weft-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	m := New("test")
	m.SetStore(func() (bool, uint64) { return true, 0 })
	m.SetDataPath(func() *DataPath { return &DataPath{Encap: "udp", Drops: map[string]uint64{"spoofed": 0}} })
	m.LeaseToKernel.Observe(0.001)
	m.Peers.WithLabelValues("vxlan").Set(1) // weftd sets it once its backend is known
	_, fams := gatherText(t, m)
	name := regexp.MustCompile(`weft_[a-z_]+`)
	seen := 0
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, n := range name.FindAllString(tg.Expr, -1) {
				seen++
				base := n
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					if trimmed, ok := strings.CutSuffix(n, suf); ok && fams[trimmed] != nil {
						base = trimmed
					}
				}
				if fams[base] == nil {
					t.Errorf("panel %q queries %s, which weftd does not serve", p.Title, n)
				}
			}
		}
	}
	for _, want := range []string{"weft_peers", "weft_lease_to_kernel_seconds_bucket", "weft_reconcile_repairs_total",
		"weft_datapath_drops_total", "weft_lease_expiry_timestamp_seconds"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("the dashboard has no panel on %s", want)
		}
	}
	if seen == 0 {
		t.Error("no weft_ metric in the dashboard")
	}
}
