//go:build linux

package bench

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/backend/hostgw"
	"github.com/weft-net/weft/internal/backend/udp"
	"github.com/weft-net/weft/internal/backend/vxlan"
)

func TestSummariseAndPercentile(t *testing.T) {
	s := Summarise([]float64{5, 1, 3, 2})
	if s != (Stat{Median: 2.5, Min: 1, Max: 5, N: 4}) {
		t.Errorf("Summarise = %+v", s)
	}
	if s := Summarise([]float64{3, 1, 2}); s.Median != 2 {
		t.Errorf("odd median = %v", s.Median)
	}
	xs := make([]float64, 100)
	for i := range xs {
		xs[i] = float64(100 - i) // 100..1
	}
	if p := Percentile(xs, 50); p.Median != 50 || p.N != 100 {
		t.Errorf("p50 = %+v", p)
	}
	if p := Percentile(xs, 99); p.Median != 99 {
		t.Errorf("p99 = %+v", p)
	}
	if f := NewFigure("x", "u", "lower", "b", Stat{Median: 3, N: 1}, Stat{}); f.Ratio != 0 {
		t.Errorf("ratio without baseline = %v", f.Ratio)
	}
	if f := NewFigure("x", "u", "lower", "b", Stat{Median: 3, N: 1}, Stat{Median: 2, N: 1}); f.Ratio != 1.5 {
		t.Errorf("ratio = %v", f.Ratio)
	}
}

func TestParseBusy(t *testing.T) {
	busy, err := parseBusy([]byte("cpu  109637 5 48533 407427 1114 7 1671 102 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"))
	if err != nil || busy != 109637+5+48533+7+1671+102 {
		t.Fatalf("busy = %d, %v", busy, err)
	}
	if _, err := parseBusy([]byte("intr 1 2 3\n")); err == nil {
		t.Error("no error for a file without the cpu line")
	}
}

func TestParseProcessCPU(t *testing.T) {
	line := "22869 (we ird) cmd) R 22819 22819 3893 0 -1 4194304 98 0 0 0 250 50 0 0 20 0 1 0 286976 3133440 414\n"
	d, err := parseProcessCPU([]byte(line))
	if err != nil || d != 3*time.Second {
		t.Fatalf("cpu = %v, %v", d, err)
	}
}

func TestProcFromTestdata(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "42"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "42", "status"), []byte("Name:\tweftd\nVmRSS:\t  20480 kB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rss, err := Proc{Root: root}.RSS(42)
	if err != nil || rss != 20<<20 {
		t.Fatalf("rss = %d, %v", rss, err)
	}
	if _, err := (Proc{Root: root}).RSS(43); err == nil {
		t.Error("no error for a missing process")
	}
}

func TestParseIperf(t *testing.T) {
	data, err := os.ReadFile("testdata/iperf3-2streams.json")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := parseIperf(data)
	if err != nil {
		t.Fatal(err)
	}
	if tr.BitsPerSecond < 1e9 || tr.Bytes < 1e8 || tr.Retransmits != 11 {
		t.Errorf("transfer = %+v", tr)
	}
	tr.BusyCPU = 2
	if got := tr.CPUPerGB(); got <= 0 || got != 2/(tr.Bytes/1e9) {
		t.Errorf("cpu per GB = %v", got)
	}
	data, err = os.ReadFile("testdata/iperf3-refused.json")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseIperf(data); err == nil || !strings.Contains(err.Error(), "Connection refused") {
		t.Errorf("error = %v, want iperf3's message", err)
	}
}

func TestVariants(t *testing.T) {
	var got []string
	for _, v := range Variants(backend.Registry{vxlan.Type(), hostgw.Type(), udp.Type()}) {
		got = append(got, v.String())
	}
	if strings.Join(got, " ") != "vxlan vxlan+DirectRouting host-gw udp" {
		t.Errorf("variants = %v", got)
	}
	if nc := (Variant{Type: "vxlan", Options: `"DirectRouting":true`}).NetConf(); nc != `{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan","DirectRouting":true}}` {
		t.Errorf("netconf = %s", nc)
	}
	if s := (Variant{Type: "vxlan", Options: `"VNI":7,"GBP":true`}).String(); s != "vxlan+GBP+VNI=7" {
		t.Errorf("String() = %s", s)
	}
}

func TestSimPeersAvoidTaken(t *testing.T) {
	taken := map[netip.Prefix]bool{netip.MustParsePrefix("10.0.2.0/24"): true}
	ps, err := simPeers(300, taken)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Prefix]bool{}
	for _, p := range ps {
		if taken[p.subnet] || seen[p.subnet] || !clusterNetwork()[0].Contains(p.subnet.Addr()) {
			t.Fatalf("bad subnet %s", p.subnet)
		}
		seen[p.subnet] = true
	}
	if ps[0].key() != "/coreos.com/network/subnets/10.0.1.0-24" || !strings.Contains(ps[0].value(), `"VtepMAC":"0a:00:00:00:00:00"`) {
		t.Errorf("first peer %s = %s", ps[0].key(), ps[0].value())
	}
	if ws := peerWrites(ps[:2], 7); len(ws) != 6 || ws[0].FDB.LinkIndex != 7 || ws[5].Route.Dst != ps[1].subnet {
		t.Errorf("writes = %v", ws)
	}
}

func TestProgress(t *testing.T) {
	var buf bytes.Buffer
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	p := newProgress(&buf, func() time.Time { return now }, 4, 300*time.Second)
	p.Step(10*time.Second, "first %d", 1)
	now = now.Add(time.Second) // a short step: the plan stands
	p.Step(50*time.Second, "second")
	now = now.Add(119 * time.Second) // 120 s for 60 planned
	p.Step(60*time.Second, "third")
	want := "[03:04:05] [1/4] first 1 (~5m00s left)\n[03:04:06] [2/4] second (~4m50s left)\n" +
		"[03:06:05] [3/4] third (~8m00s left)\n"
	if buf.String() != want {
		t.Errorf("progress:\n%s\nwant:\n%s", buf.String(), want)
	}
}

// fakeResult is a complete Result with made-up figures.
func fakeResult() *Result {
	f := func(v, b float64) Figure {
		return NewFigure("fig", "u", "higher", "b", Stat{Median: v, Min: v * 0.9, Max: v * 1.1, N: 3}, Stat{Median: b, Min: b, Max: b, N: 3})
	}
	r := &Result{Date: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Machine: Machine{CPU: "test CPU", CPUs: 2}, Elapsed: "1m0s"}
	for _, v := range Variants(backend.Registry{vxlan.Type(), hostgw.Type()}) {
		r.DataPlane = append(r.DataPlane, DataPlane{Backend: v.String(), Variant: v, TCP1: f(8, 10), TCP4: f(9, 10),
			Retransmits1: f(1, 1), RTT: f(0.05, 0.03), CPU1: f(1, 0.5), CPU4: f(1, 0.5)})
	}
	r.ControlPlane = []ControlPlane{{Peers: 1000, Join: f(0.3, 0.01), LeaseRouteP50: f(2, 1), LeaseRouteP95: f(3, 1), RSS: f(30, 20), CPU: f(0.2, 0.01)}}
	r.CNI = CNI{Pods: 100, AddP50: f(40, 30), AddP99: f(60, 50), DelP50: f(20, 15), DelP99: f(30, 20)}
	return r
}

func TestWriteTableAndDir(t *testing.T) {
	r := fakeResult()
	var buf bytes.Buffer
	if err := WriteTable(&buf, r); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"vxlan+DirectRouting", "8.00 [7.20-8.80]", "0.80x", "control 1000 peers", "cni 100 pods", "test CPU"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	dir := t.TempDir()
	if err := WriteDir(dir, r); err != nil {
		t.Fatal(err)
	}
	png, err := os.ReadFile(filepath.Join(dir, ChartFile))
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Errorf("chart: %v (%d bytes)", err, len(png))
	}
	if js, err := os.ReadFile(filepath.Join(dir, "results.json")); err != nil || !bytes.Contains(js, []byte(`"tcp_4_streams"`)) {
		t.Errorf("results.json: %v\n%s", err, js)
	}
}
