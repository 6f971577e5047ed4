//go:build linux

package kubelet

// Kubernetes' own NetworkPolicy end-to-end suite against a lab: e2e.test of
// k8s.io/kubernetes v1.36.3 (hack/e2e-bins.sh) focused on "[sig-network]
// Netpol", run as the lab's admin from the switch namespace, its report read
// back from ginkgo's JSON.
//
// What the suite needs from the cluster (test/e2e/network/netpol, v1.36.3):
//   - every spec creates three namespaces of its own (x, y, z with a random
//     suffix) and, in them, the pods its model names (agnhost porter serving
//     TCP, UDP or SCTP on ports 80 and 81, pulled IfNotPresent: the image
//     imported into each node's containerd under the reference of
//     KUBE_TEST_REPO_LIST) and one Service per pod;
//   - it probes from pod to pod by exec (`/agnhost connect <ClusterIP>:<port>
//     --timeout=3s --protocol=...`, through the apiserver and kubelet) to
//     each pod's Service ClusterIP, not to pod IPs and not by DNS name: the
//     lab needs kube-proxy (Options.KubeProxy) and no cluster DNS;
//   - the pods mount a service-account token (the controller manager's
//     service-account controllers and the root CA publisher, which kubeapi
//     runs);
//   - the SCTP specs ([Feature:SCTPConnectivity]) need SCTP in the kernel.
// A probe expected to connect is retried for up to 10 s, one expected to be
// blocked too (a policy may take a moment to apply); a matrix with a wrong
// result is probed a second time before the spec fails. Loopback (a pod to
// itself through its own Service) is not judged.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weft-net/weft/internal/lab"
)

// NetpolFocus is the ginkgo focus of the whole NetworkPolicy suite.
const NetpolFocus = `\[sig-network\] Netpol`

// NetpolSCTPSkip is the ginkgo skip of the specs that need SCTP in the kernel.
const NetpolSCTPSkip = `\[Feature:SCTPConnectivity\]`

// NetpolSubset returns the specs of the representative subset (about ten
// minutes on two cores): their texts after "[sig-network] ", each of which
// is one spec's text or its start. Between them they cover deny-all ingress
// and deny-all, allow-all, ingress allowed by podSelector, by
// namespaceSelector and by both, ports, ipBlock with except and an address
// in both, named ports in ingress and egress, egress denied and allowed, a
// policy updated, a pod's labels updated, a policy deleted, UDP, a policy
// for SCTP that must not open TCP, and the API's endPort validation
// (v1.36.3 has no endPort connectivity spec).
func NetpolSubset() []string {
	const c = "Netpol NetworkPolicy between server and client "
	return []string{
		c + "should support a 'default-deny-ingress' policy",
		c + "should support a 'default-deny-all' policy",
		c + "should support allow-all policy",
		c + "should enforce policy to allow traffic from pods within server namespace based on PodSelector",
		c + "should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector",
		c + "should enforce policy based on PodSelector and NamespaceSelector",
		c + "should enforce policy based on Ports",
		c + "should enforce except clause while egress access to server in CIDR block",
		c + "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed",
		c + "should allow ingress access on one named port",
		c + "should allow egress access on one named port",
		c + "should deny egress from all pods in a namespace",
		c + "should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector",
		c + "should enforce updated policy",
		c + "should allow ingress access from updated pod",
		c + "should stop enforcing policies after they are deleted",
		c + "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP",
		"Netpol [LinuxOnly] NetworkPolicy between server and client using UDP should support a 'default-deny-ingress' policy",
		"Netpol API should support creating NetworkPolicy API with endport field",
	}
}

// SpecFocus returns the ginkgo focus of one spec named by its text after
// "[sig-network] " (or the start of it).
func SpecFocus(text string) string { return regexp.QuoteMeta("[sig-network] " + text) }

// SuiteOptions describe one run of e2e.test.
type SuiteOptions struct {
	// Focus are ginkgo focus regular expressions (a spec runs when it
	// matches any); at least one is required.
	Focus []string
	// Skip are ginkgo skip regular expressions.
	Skip []string
	// Dir receives e2e.test's output (e2e.log), its JSON report
	// (report.json) and the framework's files; it is created when missing.
	Dir string
	// Timeout is ginkgo's time limit for the whole run; 0 means 1 hour.
	Timeout time.Duration
	// DryRun lists the specs without running them (ginkgo --dry-run).
	DryRun bool
	// Progress, when set, gets the lines that start and end each spec as
	// e2e.test prints them.
	Progress io.Writer
}

// SpecResult is one spec of a run.
type SpecResult struct {
	Name     string // the containers' texts and the spec's, as ginkgo prints them
	State    string // passed, failed, skipped, pending, panicked, timedout, interrupted, aborted
	Took     time.Duration
	Failure  string // the failure (or skip) message
	Location string // where it failed
	Output   string // what the spec wrote (the framework's log)
}

// Failed reports whether the spec ended in a failure state.
func (s SpecResult) Failed() bool {
	return s.State != "passed" && s.State != "skipped" && s.State != "pending"
}

// SuiteResult is what a run of e2e.test reported about the specs its focus
// selects.
type SuiteResult struct {
	Specs                   []SpecResult
	Passed, Failed, Skipped int
	Took                    time.Duration
	Log                     string // e2e.test's output file
}

// FailedSpecs returns the specs that failed.
func (r *SuiteResult) FailedSpecs() []SpecResult {
	var out []SpecResult
	for _, s := range r.Specs {
		if s.Failed() {
			out = append(out, s)
		}
	}
	return out
}

// RunE2E runs e2e.test against the lab as its admin, from the switch
// namespace (where the apiserver listens), with the suite's images pointed at
// the lab's (KUBE_TEST_REPO_LIST), and returns its report. Failed specs are
// in the result, not the error: the error says that the run itself went
// wrong (no report).
func (l *Lab) RunE2E(ctx context.Context, e E2E, o SuiteOptions) (*SuiteResult, error) {
	if len(o.Focus) == 0 {
		return nil, errors.New("e2e suite: no focus")
	}
	if l.cp == nil {
		return nil, errors.New("e2e suite: the lab has no control plane of this process")
	}
	if o.Timeout == 0 {
		o.Timeout = time.Hour
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	report := filepath.Join(o.Dir, "report.json")
	logPath := filepath.Join(o.Dir, "e2e.log")
	_ = os.Remove(report)
	args := []string{"--kubeconfig=" + l.cp.AdminKubeconfig(), "--provider=local",
		"--kubectl-path=" + l.o.Bins.Kube.Kubectl, "--report-dir=" + o.Dir, "--e2e-output-dir=" + o.Dir,
		"--ginkgo.json-report=" + report, "--ginkgo.timeout=" + o.Timeout.String(),
		"--ginkgo.no-color", "--ginkgo.v", "--ginkgo.silence-skips"}
	for _, f := range o.Focus {
		args = append(args, "--ginkgo.focus="+f)
	}
	for _, s := range o.Skip {
		args = append(args, "--ginkgo.skip="+s)
	}
	if o.DryRun {
		args = append(args, "--ginkgo.dry-run")
	}
	argv := append([]string{"nsenter", "--net=" + lab.NSPath(l.cl.Lab().Topology().ServiceNS()), "--", e.Test()}, args...)
	begin := time.Now()
	runErr := runLogged(ctx, argv, []string{"KUBE_TEST_REPO_LIST=" + e.RepoList()}, logPath, o.Progress)
	res, err := readGinkgoReport(report, o.Focus)
	if err != nil {
		return nil, fmt.Errorf("e2e suite (%v): %w\n%s", runErr, err, logTail(logPath, 30))
	}
	res.Took, res.Log = time.Since(begin), logPath
	return res, nil
}

// runLogged runs argv with env added, its output written to logPath and the
// lines that start and end a spec also to progress.
func runLogged(ctx context.Context, argv, env []string, logPath string, progress io.Writer) error {
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = filepath.Dir(logPath)
	// e2e.test dies with this process (nsenter execs it: same pid).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	done := make(chan struct{})
	go func() {
		defer close(done)
		copyProgress(pr, f, progress)
	}()
	err = cmd.Run()
	pw.Close()
	<-done
	return err
}

// specLine matches what ginkgo -v prints when a spec starts (its text) and
// ends ("• [12.3 seconds]", "• [FAILED] [45.6 seconds]").
var specLine = regexp.MustCompile(`^(\[sig-[a-z-]+\] |• |S \[SKIPPED\])`)

// copyProgress copies r to w, and its spec lines to progress when set.
func copyProgress(r io.Reader, w io.Writer, progress io.Writer) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(w, line)
		if progress != nil && specLine.MatchString(line) {
			fmt.Fprintln(progress, line)
		}
	}
	_, _ = io.Copy(w, r) // a line longer than the buffer: keep the rest
}

// ginkgoReport is the part of ginkgo v2's JSON report (an array of these)
// that RunE2E reads.
type ginkgoReport struct {
	SuiteDescription string
	SpecReports      []struct {
		ContainerHierarchyTexts    []string
		LeafNodeType               string
		LeafNodeText               string
		State                      string
		RunTime                    time.Duration
		CapturedGinkgoWriterOutput string
		CapturedStdOutErr          string
		Failure                    *struct {
			Message  string
			Location struct {
				FileName   string
				LineNumber int
			}
		}
	}
}

// readGinkgoReport reads ginkgo's JSON report and returns the specs (It
// nodes) that focus selects (ginkgo matches a focus against the suite's
// description and the spec's text; specs outside it are reported as skipped
// and left out here), so that a skip is one the run chose (--ginkgo.skip, or
// the spec's own skip).
func readGinkgoReport(path string, focus []string) (*SuiteResult, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var reports []ginkgoReport
	if err := json.Unmarshal(b, &reports); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	re, err := regexp.Compile(strings.Join(focus, "|"))
	if err != nil {
		return nil, fmt.Errorf("focus: %w", err)
	}
	res := &SuiteResult{}
	for _, r := range reports {
		for _, s := range r.SpecReports {
			if s.LeafNodeType != "It" {
				continue
			}
			name := strings.Join(append(slices.Clone(s.ContainerHierarchyTexts), s.LeafNodeText), " ")
			if !re.MatchString(r.SuiteDescription + " " + name) {
				continue
			}
			sr := SpecResult{Name: name, State: s.State, Took: s.RunTime,
				Output: s.CapturedGinkgoWriterOutput + s.CapturedStdOutErr}
			if s.Failure != nil {
				sr.Failure = s.Failure.Message
				if s.Failure.Location.FileName != "" {
					sr.Location = fmt.Sprintf("%s:%d", s.Failure.Location.FileName, s.Failure.Location.LineNumber)
				}
			}
			switch {
			case sr.State == "passed":
				res.Passed++
			case sr.State == "skipped" || sr.State == "pending":
				res.Skipped++
			default:
				res.Failed++
			}
			res.Specs = append(res.Specs, sr)
		}
	}
	if len(reports) == 0 {
		return nil, fmt.Errorf("%s: no suite in the report", path)
	}
	return res, nil
}

// logHeader is framework.Logf's header (klog's: "I1207 16:18:57.123456
// 4242 probe.go:95] ").
var logHeader = regexp.MustCompile(`^[IWEF]\d{4} [0-9:.]+\s+\d+ \S+:\d+\] `)

// probeValidation is the framework's line before a wrong probe's
// ("Validation of x/a -> y/b FAILED !!!").
var probeValidation = regexp.MustCompile(`^Validation of (\S+) -> (\S+) FAILED !!!$`)

// ProbeFailures returns the probes of a spec's log whose result was not the
// expected one, each once (both tries of the matrix log them), as "x/a ->
// y/b: Expected blocked pod connection was instead ALLOWED --- run 'kubectl
// exec ...'". A pod's probe of itself is left out, as the suite does not
// judge it.
func ProbeFailures(output string) []string {
	var out []string
	seen := map[string]bool{}
	pair := ""
	for line := range strings.Lines(output) {
		line = logHeader.ReplaceAllString(strings.TrimSpace(line), "")
		if m := probeValidation.FindStringSubmatch(line); m != nil {
			pair = m[1] + " -> " + m[2]
			if m[1] == m[2] {
				pair = "" // loopback
			}
			continue
		}
		if pair == "" || !strings.Contains(line, " was instead ") {
			continue
		}
		if e := pair + ": " + line; !seen[e] {
			seen[e] = true
			out = append(out, e)
		}
		pair = ""
	}
	return out
}

// probeRetry is the framework's line for a probe that is retried because
// its result is not the expected one yet: "probe #2 :: connectivity not
// expected :: x/a -> 10.96.1.2" (it connected where a policy should block
// it), or "... :: connectivity expected :: ..." (blocked where it should
// connect).
var probeRetry = regexp.MustCompile(`probe #(\d+) :: connectivity (not )?expected :: (\S+ -> \S+)`)

// Retries are the probes of a spec that were retried before they gave the
// expected result (or gave up), by "ns/pod -> ClusterIP", with the number
// of retries each: a policy that applies late shows here even when the spec
// passes (each retry is about a second later than the one before).
type Retries struct {
	Connected map[string]int // connected while a policy should have blocked it
	Blocked   map[string]int // blocked while it should have connected
}

// Len returns the number of probes retried.
func (r Retries) Len() int { return len(r.Connected) + len(r.Blocked) }

// String lists the retried probes, most retries first.
func (r Retries) String() string {
	var parts []string
	for _, kind := range []struct {
		what string
		m    map[string]int
	}{{"connected before a deny applied", r.Connected}, {"blocked before an allow applied", r.Blocked}} {
		keys := slices.Collect(maps.Keys(kind.m))
		slices.SortFunc(keys, func(a, b string) int {
			if c := kind.m[b] - kind.m[a]; c != 0 {
				return c
			}
			return strings.Compare(a, b)
		})
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s %s (%d retries)", k, kind.what, kind.m[k]))
		}
	}
	return strings.Join(parts, "; ")
}

// ProbeRetries reads a spec's log for the probes that were retried.
func ProbeRetries(output string) Retries {
	r := Retries{Connected: map[string]int{}, Blocked: map[string]int{}}
	for line := range strings.Lines(output) {
		m := probeRetry.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[1])
		into := r.Blocked
		if m[2] != "" {
			into = r.Connected
		}
		into[m[3]] = max(into[m[3]], n)
	}
	return r
}

// KernelHasSCTP reports whether the kernel gives SCTP sockets (the SCTP
// specs need them in the pods).
func KernelHasSCTP() bool {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, syscall.IPPROTO_SCTP)
	if err != nil {
		return false
	}
	syscall.Close(fd)
	return true
}
