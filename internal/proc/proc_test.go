//go:build linux

package proc

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A process's output goes to its log after a header; Stop ends it (SIGTERM,
// then SIGKILL after the grace period when it ignores SIGTERM); ExitError
// wraps ErrExited and quotes the log's tail.
func TestStartStopExit(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "p.log")
	p, err := Start(Options{Name: "sleeper", Log: log, Env: []string{"WEFT_PROC_TEST=hello"}},
		[]string{"sh", "-c", `trap "" TERM; echo "$WEFT_PROC_TEST"; while :; do sleep 0.05; done`})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(LogTail(log, 5), "hello") {
		if time.Now().After(deadline) {
			t.Fatalf("no output in the log:\n%s", LogTail(log, 5))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if p.Exited() || p.Pid() <= 0 || RSSKB(p.Pid()) <= 0 {
		t.Fatalf("running process: exited %v pid %d rss %d", p.Exited(), p.Pid(), RSSKB(p.Pid()))
	}
	start := time.Now()
	if err := p.Stop(200 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("a process ignoring SIGTERM stopped after %v, before the grace period", took)
	}
	if err := p.ExitError(); !errors.Is(err, ErrExited) || !strings.Contains(err.Error(), "sleeper") ||
		!strings.Contains(err.Error(), "hello") {
		t.Errorf("ExitError = %v", err)
	}
	if b, _ := os.ReadFile(log); !strings.HasPrefix(string(b), "==== ") {
		t.Errorf("log has no header: %q", b)
	}
	if err := p.Stop(0); err != nil {
		t.Errorf("stopping an exited process: %v", err)
	}
	if !strings.Contains(LogTail(filepath.Join(dir, "none"), 3), "no log") {
		t.Error("LogTail of a missing file does not say so")
	}
	var nilProc *Proc
	if err := nilProc.Stop(time.Second); err != nil {
		t.Errorf("stopping a nil process: %v", err)
	}
}

func TestErrorTail(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "weftd.log")
	text := "time=1 level=INFO msg=starting\n" +
		"time=2 level=ERROR msg=\"netfilter: iptables: executable file not found in $PATH\"\n" +
		"time=3 level=INFO msg=\"shutting down\"\n" +
		"weftd: set up rules: exec: \"iptables\": executable file not found in $PATH\n"
	if err := os.WriteFile(log, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	got := ErrorTail(log, 5)
	if !strings.Contains(got, "last errors of "+log) || !strings.Contains(got, "level=ERROR") ||
		!strings.Contains(got, "weftd: set up rules") || strings.Contains(got, "starting") || strings.Contains(got, "shutting down") {
		t.Errorf("ErrorTail = %q, want the two error lines, labelled", got)
	}
	if got := ErrorTail(log, 1); strings.Contains(got, "level=ERROR") || !strings.Contains(got, "weftd: set up rules") {
		t.Errorf("ErrorTail(1) = %q, want the last error line only", got)
	}
	quiet := filepath.Join(dir, "quiet.log")
	if err := os.WriteFile(quiet, []byte("a\nb\nc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := ErrorTail(quiet, 2); !strings.Contains(got, "last lines of") || !strings.HasSuffix(got, "b\nc") {
		t.Errorf("ErrorTail of a log with no error = %q, want its last 2 lines", got)
	}
	if got := ErrorTail(filepath.Join(dir, "none"), 2); !strings.Contains(got, "no log") {
		t.Errorf("ErrorTail of a missing file = %q", got)
	}
}
