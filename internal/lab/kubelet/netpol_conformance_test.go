//go:build linux

package kubelet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// EnvNetpolConformance set to "all" makes TestKubeletNetpolConformance run
// the whole NetworkPolicy suite instead of its subset (make
// test-netpol-conformance).
const EnvNetpolConformance = "WEFT_NETPOL_CONFORMANCE"

// TestKubeletNetpolConformance runs Kubernetes' own NetworkPolicy end-to-end
// suite (k8s.io/kubernetes v1.36.3, "[sig-network] Netpol") against a 2-node
// lab with weft deployed by deploy/kube-weft-netpol.yml (weftd
// --network-policy) and kube-proxy on every node: by default the
// representative subset of NetpolSubset (about ten minutes), and the whole
// suite when WEFT_NETPOL_CONFORMANCE=all. The SCTP specs are skipped when the
// kernel has no SCTP. It logs the pass, fail and skip counts and fails on
// any failed spec, naming each with its failure, the probes that went wrong
// and the tail of weftd's logs. e2e.test's whole output and its reports are
// kept (in a directory the log names) when the test fails.
func TestKubeletNetpolConformance(t *testing.T) {
	whole := os.Getenv(EnvNetpolConformance) == "all"
	limit := 30 * time.Minute
	if whole {
		limit = 3 * time.Hour
	}
	ctx, cancel := context.WithTimeout(t.Context(), limit)
	defer cancel()
	var e E2E
	l := startLabWith(t, ctx, func(o *Options) {
		repo, err := filepath.Abs(filepath.Join("..", "..", ".."))
		if err != nil {
			t.Fatal(err)
		}
		if e, err = FindE2E(ctx, repo); err != nil {
			t.Fatalf("e2e suite: %v", err)
		}
		o.Nodes = 2
		o.NetworkPolicy, o.KubeProxy = true, true
		o.Bins.KubeProxy = e.KubeProxy()
		o.ExtraImages = append(o.ExtraImages, e.AgnhostImage())
	})

	focus := []string{NetpolFocus}
	if !whole {
		focus = nil
		for _, s := range NetpolSubset() {
			focus = append(focus, SpecFocus(s))
		}
	}
	var skip []string
	if !KernelHasSCTP() {
		t.Logf("the kernel has no SCTP: the SCTP specs are skipped (%s)", NetpolSCTPSkip)
		skip = append(skip, NetpolSCTPSkip)
	}
	// Outside the test's TempDir: kept when the test fails.
	dir, err := os.MkdirTemp("", "weft-netpol-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("e2e.test's output and reports are kept in %s", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	listed := listSpecs(t, ctx, l, e, dir, focus, skip, whole)

	begin := time.Now()
	res, err := l.RunE2E(ctx, e, SuiteOptions{Focus: focus, Skip: skip, Dir: dir, Timeout: limit - 5*time.Minute,
		Progress: t.Output()})
	if err != nil {
		t.Fatalf("e2e suite: %v", err)
	}
	what := "subset"
	if whole {
		what = "whole suite"
	}
	t.Logf("NetworkPolicy suite (%s, %d specs listed): %d passed, %d failed, %d skipped in %v",
		what, listed, res.Passed, res.Failed, res.Skipped, time.Since(begin).Round(time.Second))
	for _, s := range res.Specs {
		t.Logf("  %-11s %6v  %s", s.State, s.Took.Round(time.Second), s.Name)
		if r := ProbeRetries(s.Output); r.Len() > 0 {
			t.Logf("      %d probes retried: %s", r.Len(), r)
		}
	}
	if res.Passed+res.Failed+res.Skipped != listed {
		t.Errorf("the run reported %d specs, the dry run listed %d", res.Passed+res.Failed+res.Skipped, listed)
	}
	failed := res.FailedSpecs()
	if len(failed) == 0 {
		return
	}
	var b strings.Builder
	for _, s := range failed {
		fmt.Fprintf(&b, "\n--- %s: %s\n    at %s: %s\n", s.State, s.Name, s.Location, firstLines(s.Failure, 5))
		probes := ProbeFailures(s.Output)
		for i, p := range probes {
			if i == 12 {
				fmt.Fprintf(&b, "    ... and %d more\n", len(probes)-i)
				break
			}
			fmt.Fprintf(&b, "    %s\n", p)
		}
	}
	t.Errorf("%d of %d NetworkPolicy specs failed:%s\nweftd's logs:\n%s\ne2e.test's output: %s",
		len(failed), len(res.Specs), b.String(), weftdLogs(l.Lab, 30), res.Log)
}

// listSpecs dry-runs the suite with focus and skip and returns how many specs
// it selects; for the subset it also checks that every entry of NetpolSubset
// names exactly one spec (a spec renamed upstream would otherwise drop out
// unnoticed).
func listSpecs(t *testing.T, ctx context.Context, l *testLab, e E2E, dir string, focus, skip []string, whole bool) int {
	t.Helper()
	res, err := l.RunE2E(ctx, e, SuiteOptions{Focus: focus, Skip: skip, Dir: filepath.Join(dir, "dry-run"), DryRun: true})
	if err != nil {
		t.Fatalf("e2e suite dry run: %v", err)
	}
	if len(res.Specs) == 0 {
		t.Fatalf("the focus selects no spec: %q", focus)
	}
	if !whole {
		for _, s := range NetpolSubset() {
			n := 0
			for _, spec := range res.Specs {
				if strings.HasPrefix(spec.Name, "[sig-network] "+s) {
					n++
				}
			}
			if n != 1 {
				t.Errorf("subset entry %q names %d specs of e2e.test, want 1", s, n)
			}
		}
	}
	return len(res.Specs)
}

// weftdLogs returns the tails of the weftd containers' logs on every node.
func weftdLogs(l *Lab, lines int) string {
	logs, _ := filepath.Glob(filepath.Join(l.o.Dir, "nodes", "*", "log-pods", WeftNamespace+"_*", "kube-flannel", "*.log"))
	slices.Sort(logs)
	var b strings.Builder
	for _, p := range logs {
		b.WriteString(logTail(p, lines))
		b.WriteString("\n")
	}
	return b.String()
}

// firstLines returns the first n lines of s, indented for the log.
func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = append(lines[:n], "...")
	}
	return strings.Join(lines, "\n      ")
}
