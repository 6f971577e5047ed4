//go:build linux

package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
)

// WriteTable prints every figure with its baseline and ratio.
func WriteTable(w io.Writer, r *Result) error {
	m := r.Machine
	fmt.Fprintf(w, "weft lab bench, %s, %s (%d CPUs, %d MB, kernel %s), load %s -> %s, took %s%s\n",
		r.Date.Format("2006-01-02 15:04 MST"), m.CPU, m.CPUs, m.MemoryMB, m.Kernel, m.LoadStart, m.LoadEnd, r.Elapsed, quickNote(r.Quick))
	s := r.Settings
	fmt.Fprintf(w, "medians [min-max] of %d iperf3 runs of %gs, %d pings; p50/p95/p99 over the samples; ratio = figure / baseline\n\n",
		s.Runs, s.DurationSec, s.Pings)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "part\tfigure\tunit\tvalue\tbaseline\tratio\t")
	for _, d := range r.DataPlane {
		for _, f := range d.Figures() {
			row(tw, d.Backend, f)
		}
	}
	fmt.Fprintln(tw, "\t\t\t\t\t\t")
	for _, c := range r.ControlPlane {
		for _, f := range c.Figures() {
			row(tw, fmt.Sprintf("control %d peers", c.Peers), f)
		}
	}
	fmt.Fprintln(tw, "\t\t\t\t\t\t")
	for _, f := range r.CNI.Figures() {
		row(tw, fmt.Sprintf("cni %d pods", r.CNI.Pods), f)
	}
	if len(r.Kube) > 0 {
		fmt.Fprintln(tw, "\t\t\t\t\t\t")
	}
	for _, k := range r.Kube {
		for _, f := range k.Figures() {
			row(tw, fmt.Sprintf("kube %d nodes", k.Nodes), f)
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	fmt.Fprintf(w, "\nbaselines: data plane = %s; join = %s; lease to route = %s; RSS = %s; CPU to join = %s; CNI = %s\n",
		baseUnderlay, baseJoin, baseLeaseRoute, baseRSS, baseCPU, baseCNI)
	writeKubeNotes(w, r)
	return nil
}

func quickNote(q bool) string {
	if q {
		return " (--quick: a smoke run, not figures to quote)"
	}
	return ""
}

func row(w io.Writer, part string, f Figure) {
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t\n", part, f.Name, f.Unit, fmtStat(f.Value), fmtStat(f.Baseline), fmtRatio(f.Ratio))
}

// fmtStat prints a median and, when the samples differ, their range.
func fmtStat(s Stat) string {
	if s.N == 0 {
		return "-"
	}
	if s.Min == s.Max {
		return fmtNum(s.Median)
	}
	return fmt.Sprintf("%s [%s-%s]", fmtNum(s.Median), fmtNum(s.Min), fmtNum(s.Max))
}

func fmtRatio(r float64) string {
	if r == 0 || math.IsInf(r, 0) || math.IsNaN(r) {
		return "-"
	}
	return fmt.Sprintf("%.2fx", r)
}

// fmtNum prints three significant digits.
func fmtNum(v float64) string {
	a := math.Abs(v)
	switch {
	case v == 0:
		return "0"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	case a >= 0.01:
		return fmt.Sprintf("%.3f", v)
	}
	return strings.TrimRight(fmt.Sprintf("%.5f", v), "0")
}

// WriteJSON writes r as indented JSON.
func WriteJSON(w io.Writer, r *Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

// WriteDir writes results.json and the throughput chart into dir.
func WriteDir(dir string, r *Result) (retErr error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	f, err := os.Create(filepath.Join(dir, "results.json"))
	if err != nil {
		return fmt.Errorf("create results: %w", err)
	}
	defer func() {
		if err := f.Close(); err != nil && retErr == nil {
			retErr = fmt.Errorf("write results: %w", err)
		}
	}()
	if err := WriteJSON(f, r); err != nil {
		return err
	}
	return WriteChart(filepath.Join(dir, ChartFile), r)
}
