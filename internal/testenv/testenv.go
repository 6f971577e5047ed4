// Package testenv is where a test says which tier it belongs to, and where
// a test of a tier that cannot run here is skipped with the reason. The
// tiers:
//   - plain: no root, no binaries (parsers, arithmetic, desired-state diffs
//     against fakes, real etcd embedded in the test process); such a test
//     calls nothing here and always runs;
//   - privileged: root, for network namespaces, devices, netfilter rules or
//     processes of its own (Privileged);
//   - end to end: root and the real binaries in a lab (EndToEnd).
//
// -short runs plain tests only. WEFT_TEST_TIERS, a comma-separated list of
// "privileged" and "e2e", runs only the named tiers besides the plain one
// (make test-privileged, make test-e2e); unset, every tier runs.
package testenv

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TiersEnv names the variable that selects the tiers to run.
const TiersEnv = "WEFT_TEST_TIERS"

// The tiers WEFT_TEST_TIERS names.
const (
	TierPrivileged = "privileged"
	TierEndToEnd   = "e2e"
)

// Privileged skips t unless it can run as a privileged test: root, the
// tier selected, not -short, and binaries on PATH. what says what the test
// does that needs root ("creates a network namespace").
func Privileged(t testing.TB, what string, binaries ...string) {
	t.Helper()
	need(t, TierPrivileged, what, binaries)
}

// EndToEnd skips t unless it can run as an end-to-end test (the real
// binaries in a lab): as Privileged, for the e2e tier.
func EndToEnd(t testing.TB, what string, binaries ...string) {
	t.Helper()
	need(t, TierEndToEnd, what, binaries)
}

func need(t testing.TB, tier, what string, binaries []string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("-short runs plain tests only; this %s test %s", tier, what)
	}
	if !Selected(tier) {
		t.Skipf("%s=%s does not select the %s tier; this test %s", TiersEnv, os.Getenv(TiersEnv), tier, what)
	}
	if os.Geteuid() != 0 {
		t.Skipf("needs root: %s (run `make test` as root)", what)
	}
	for _, b := range binaries {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("needs %s: %v", b, err)
		}
	}
}

// Selected reports whether WEFT_TEST_TIERS selects tier (unset selects
// every tier).
func Selected(tier string) bool {
	v := strings.TrimSpace(os.Getenv(TiersEnv))
	return v == "" || slices.Contains(strings.Split(v, ","), tier)
}
