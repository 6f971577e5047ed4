//go:build linux

package kubelet

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"
)

// A ginkgo v2 JSON report as e2e.test writes it, cut down: a suite node, a
// spec outside the focus (reported as skipped by the filter), and in it a
// passed, a failed (with the framework's probe lines) and a skipped spec.
const testGinkgoReport = `[{"SuiteDescription":"Kubernetes e2e suite","SuiteSucceeded":false,
"SpecReports":[
 {"LeafNodeType":"SynchronizedBeforeSuite","State":"passed"},
 {"ContainerHierarchyTexts":["[sig-apps] Deployment"],"LeafNodeType":"It","LeafNodeText":"should work","State":"skipped"},
 {"ContainerHierarchyTexts":["[sig-network] Netpol","NetworkPolicy between server and client"],"LeafNodeType":"It",
  "LeafNodeText":"should support allow-all policy [Feature:NetworkPolicy]","State":"passed","RunTime":42000000000},
 {"ContainerHierarchyTexts":["[sig-network] Netpol","NetworkPolicy between server and client"],"LeafNodeType":"It",
  "LeafNodeText":"should support a 'default-deny-ingress' policy [Feature:NetworkPolicy]","State":"failed","RunTime":61000000000,
  "CapturedGinkgoWriterOutput":"I1207 16:18:57.123456 4242 probe.go:95] Validation of x-1/a -> x-1/b FAILED !!!\nI1207 16:18:57.123456 4242 probe.go:96] error <nil> \nI1207 16:18:57.123457 4242 probe.go:97] Expected blocked pod connection was instead ALLOWED --- run 'kubectl exec a -n x-1 -- /agnhost connect 10.96.1.2:80'\nI1207 16:18:57.2 4242 probe.go:95] Validation of x-1/a -> x-1/a FAILED !!!\nI1207 16:18:57.2 4242 probe.go:97] Expected blocked pod connection was instead ALLOWED --- run 'kubectl exec a -n x-1 -- /agnhost connect 10.96.1.2:80'\nI1207 16:18:58.1 4242 probe.go:95] Validation of x-1/a -> x-1/b FAILED !!!\nI1207 16:18:58.1 4242 probe.go:97] Expected blocked pod connection was instead ALLOWED --- run 'kubectl exec a -n x-1 -- /agnhost connect 10.96.1.2:80'\nunrelated\nI1207 16:18:59.0 4242 kubemanager.go:190]  probe #1 :: connectivity not expected :: x-1/a -> 10.96.1.2\nI1207 16:18:59.0 4242 kubemanager.go:190]  probe #2 :: connectivity not expected :: x-1/a -> 10.96.1.2\nI1207 16:18:59.0 4242 kubemanager.go:178] probe #1 :: connectivity expected :: y-1/a -> 10.96.1.3 :: stderr - timeout\nI1207 16:18:59.1 4242 probe.go:95] Validation of y-1/a -> x-1/b FAILED !!!\nI1207 16:18:59.1 4242 probe.go:97] Expected allowed pod connection was instead BLOCKED --- run 'kubectl exec a -n y-1 -- /agnhost connect 10.96.1.2:80'\n",
  "Failure":{"Message":"Had 2 wrong results in reachability matrix","Location":{"FileName":"test/e2e/network/netpol/test_helper.go","LineNumber":111}}},
 {"ContainerHierarchyTexts":["[sig-network] Netpol [Feature:SCTPConnectivity] [LinuxOnly]","NetworkPolicy between server and client using SCTP"],
  "LeafNodeType":"It","LeafNodeText":"should support a 'default-deny-ingress' policy [Feature:NetworkPolicy]","State":"skipped"}
]}]`

func TestReadGinkgoReport(t *testing.T) {
	path := filepath.Join(t.TempDir(), "report.json")
	if err := os.WriteFile(path, []byte(testGinkgoReport), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := readGinkgoReport(path, []string{NetpolFocus})
	if err != nil {
		t.Fatal(err)
	}
	if res.Passed != 1 || res.Failed != 1 || res.Skipped != 1 || len(res.Specs) != 3 {
		t.Fatalf("passed %d failed %d skipped %d of %d specs, want 1, 1, 1 of 3: %+v", res.Passed, res.Failed, res.Skipped,
			len(res.Specs), res.Specs)
	}
	failed := res.FailedSpecs()
	if len(failed) != 1 {
		t.Fatalf("failed specs %v, want one", failed)
	}
	f := failed[0]
	want := "[sig-network] Netpol NetworkPolicy between server and client should support a 'default-deny-ingress' policy [Feature:NetworkPolicy]"
	if f.Name != want || f.Took != 61*time.Second || f.Location != "test/e2e/network/netpol/test_helper.go:111" ||
		f.Failure != "Had 2 wrong results in reachability matrix" {
		t.Errorf("failed spec %+v", f)
	}
	probes := ProbeFailures(f.Output)
	wantProbes := []string{
		"x-1/a -> x-1/b: Expected blocked pod connection was instead ALLOWED --- run 'kubectl exec a -n x-1 -- /agnhost connect 10.96.1.2:80'",
		"y-1/a -> x-1/b: Expected allowed pod connection was instead BLOCKED --- run 'kubectl exec a -n y-1 -- /agnhost connect 10.96.1.2:80'",
	}
	if !slices.Equal(probes, wantProbes) {
		t.Errorf("probe failures %q, want %q", probes, wantProbes)
	}

	retries := ProbeRetries(f.Output)
	if retries.Len() != 2 || retries.Connected["x-1/a -> 10.96.1.2"] != 2 || retries.Blocked["y-1/a -> 10.96.1.3"] != 1 {
		t.Errorf("retries %+v", retries)
	}
	if got, want := retries.String(), "x-1/a -> 10.96.1.2 connected before a deny applied (2 retries); "+
		"y-1/a -> 10.96.1.3 blocked before an allow applied (1 retries)"; got != want {
		t.Errorf("retries %q, want %q", got, want)
	}

	// A focus on one spec counts that spec only.
	res, err = readGinkgoReport(path, []string{SpecFocus("Netpol NetworkPolicy between server and client should support allow-all policy")})
	if err != nil {
		t.Fatal(err)
	}
	if res.Passed != 1 || len(res.Specs) != 1 {
		t.Errorf("one spec's focus: %+v", res.Specs)
	}
}

func TestReadGinkgoReportBad(t *testing.T) {
	dir := t.TempDir()
	for name, text := range map[string]string{"empty.json": "[]", "bad.json": "{"} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := readGinkgoReport(path, []string{NetpolFocus}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := readGinkgoReport(filepath.Join(dir, "missing.json"), []string{NetpolFocus}); err == nil {
		t.Error("a missing report: no error")
	}
}

// Every subset entry is in the whole suite's focus, and its own focus
// selects its text (quoted: the quotes and parentheses in spec names).
func TestNetpolSubsetInFocus(t *testing.T) {
	whole := regexp.MustCompile(NetpolFocus)
	for _, s := range NetpolSubset() {
		text := "Kubernetes e2e suite [sig-network] " + s + " [Feature:NetworkPolicy]"
		if !whole.MatchString(text) {
			t.Errorf("%q is outside %s", s, NetpolFocus)
		}
		if !regexp.MustCompile(SpecFocus(s)).MatchString(text) {
			t.Errorf("%q: its focus %s does not select it", s, SpecFocus(s))
		}
	}
}
