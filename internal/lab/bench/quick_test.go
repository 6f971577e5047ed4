//go:build linux

package bench_test

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/weft-net/weft/internal/testenv"

	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/bench"
	"github.com/weft-net/weft/internal/testbin"
)

// binDir returns a directory with weft, weftd and cni/.
func binDir(t *testing.T) string {
	t.Helper()
	d, err := testbin.Dir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestBenchQuick runs the real command, `weft lab bench --quick --json`, and
// checks that the results hold every figure with sane values and that the
// lab is gone afterwards. It checks the bench, not the figures: those come
// from a full run (BENCHMARKS.md), never from a timed test.
func TestBenchQuick(t *testing.T) {
	testenv.EndToEnd(t, "runs the quick bench, about half a minute in a lab of network namespaces")
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("needs iperf3 (make deps installs it)")
	}
	before, err := lab.List()
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(filepath.Join(binDir(t), "weft"), "lab", "bench", "--quick", "--json", "--out", out, "--state-root", t.TempDir())
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("weft lab bench --quick: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "left)") {
		t.Errorf("no progress lines with the time left on stderr:\n%s", stderr.String())
	}
	var r bench.Result
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("--json output: %v\n%s", err, stdout.String())
	}
	checkResult(t, &r)
	if _, err := os.Stat(filepath.Join(out, "results.json")); err != nil {
		t.Error(err)
	}
	if png, err := os.ReadFile(filepath.Join(out, bench.ChartFile)); err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Errorf("chart: %v", err)
	}
	after, err := lab.List()
	if err != nil {
		t.Fatal(err)
	}
	// Other packages' tests may build labs meanwhile: only the bench's own
	// labs ("bn" + random) must be gone.
	for _, l := range after {
		if strings.HasPrefix(l, "bn") && !slices.Contains(before, l) {
			t.Errorf("the bench left lab %s behind", l)
		}
	}
}

func checkResult(t *testing.T, r *bench.Result) {
	t.Helper()
	if r.Date.IsZero() || !r.Quick || r.Machine.CPUs < 1 || r.Machine.Kernel == "" {
		t.Errorf("header: date %v quick %v machine %+v", r.Date, r.Quick, r.Machine)
	}
	var backends []string
	for _, d := range r.DataPlane {
		backends = append(backends, d.Backend)
		for _, f := range []bench.Figure{d.TCP1, d.TCP4} {
			// One run each (--quick) on a shared machine: the ratio can be
			// anything positive; it must be the value over the baseline.
			if f.Value.Median <= 0 || f.Baseline.Median <= 0 || math.Abs(f.Ratio-f.Value.Median/f.Baseline.Median) > 1e-6*f.Ratio {
				t.Errorf("%s %s: %+v, want throughput above zero and the ratio of the value to the baseline", d.Backend, f.Name, f)
			}
		}
		for _, f := range []bench.Figure{d.RTT, d.CPU1, d.CPU4} {
			checkPositive(t, d.Backend, f)
		}
		if f := d.Retransmits1; f.Value.N == 0 || f.Value.Median < 0 || f.Baseline.N == 0 {
			t.Errorf("%s %s: %+v", d.Backend, f.Name, f)
		}
	}
	for _, want := range []string{"vxlan", "vxlan+DirectRouting", "host-gw"} {
		if !slices.Contains(backends, want) {
			t.Errorf("data plane measured %v, want %s among them", backends, want)
		}
	}
	if len(r.ControlPlane) != 1 || r.ControlPlane[0].Peers != 200 {
		t.Fatalf("control plane: %+v, want one size of 200 peers", r.ControlPlane)
	}
	for _, f := range r.ControlPlane[0].Figures() {
		checkPositive(t, "control plane", f)
	}
	// The kube part runs when `make kube-bins` has built its binaries (make
	// test does), and is skipped with a reason otherwise.
	switch {
	case r.KubeSkipped != "":
		if !strings.Contains(r.KubeSkipped, "kubernetes binaries not found") || len(r.Kube) != 0 {
			t.Errorf("kube part: skipped %q with %d sizes, want skipped only for missing binaries", r.KubeSkipped, len(r.Kube))
		}
	case len(r.Kube) != 1 || r.Kube[0].Nodes != 200:
		t.Errorf("kube part: %+v, want one size of 200 Nodes", r.Kube)
	default:
		for _, f := range r.Kube[0].Figures() {
			checkPositive(t, "kube", f)
		}
		if k := r.Kube[0]; k.NodeJSONBytes < 5000 || k.NodeProtoBytes <= 0 || k.ListAllocMiB.Median <= 0 {
			t.Errorf("kube part: node %d/%d bytes, list allocated %v MiB", k.NodeJSONBytes, k.NodeProtoBytes, k.ListAllocMiB.Median)
		}
	}
	if r.CNI.Pods != 20 {
		t.Errorf("cni pods = %d, want 20", r.CNI.Pods)
	}
	for _, f := range r.CNI.Figures() {
		checkPositive(t, "cni", f)
	}
}

func checkPositive(t *testing.T, part string, f bench.Figure) {
	t.Helper()
	if f.Name == "" || f.Unit == "" || f.BaselineIs == "" || f.Value.N == 0 || f.Baseline.N == 0 || !(f.Value.Median > 0) || !(f.Baseline.Median > 0) ||
		!(f.Ratio > 0) || math.IsInf(f.Ratio, 0) || f.Value.Min > f.Value.Median || f.Value.Median > f.Value.Max {
		t.Errorf("%s %s: %+v, want positive figures with a baseline and a ratio", part, f.Name, f)
	}
}
