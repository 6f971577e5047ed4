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
