//go:build linux

// Package proc runs the child processes of the lab and the test harnesses
// (kube-apiserver, kubelet, containerd, ...): output appended to a log
// file, tied to the starter's life or detached from it, stopped with a
// grace period, and their failures described with the tail of their log.
package proc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// ErrExited is wrapped by ExitError: the process exited while it was
// waited for.
var ErrExited = errors.New("process exited")

// killWait bounds how long Stop waits for a process after SIGKILL.
const killWait = 10 * time.Second

// Options describe how to start a process.
type Options struct {
	// Name names it in errors and logs; Log is the file its output is
	// appended to (a header line with the command line first).
	Name, Log string
	// Env, when not nil, is appended to this process's environment.
	Env []string
	// Dir is its working directory ("": this process's).
	Dir string
	// Detach puts it in a session of its own, so that it outlives its
	// starter; otherwise it is in a process group of its own and the
	// kernel kills it when the starter dies (PR_SET_PDEATHSIG), so a killed
	// test leaves nothing behind.
	Detach bool
	// Start starts the command (to start it in a network namespace:
	// lab.StartIn); nil means cmd.Start.
	Start func(*exec.Cmd) error
	// Hook, when not nil, is called on the command before it starts.
	Hook func(*exec.Cmd)
}

// Proc is a started process.
type Proc struct {
	name, log string
	cmd       *exec.Cmd
	done      chan struct{} // closed once the process exited and was waited for
	err       error         // Wait's result; read only after done
}

// Start starts argv as o says.
func Start(o Options, argv []string) (*Proc, error) {
	f, err := os.OpenFile(o.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", o.Name, err)
	}
	fmt.Fprintf(f, "==== %s: %s\n", time.Now().Format(time.RFC3339), strings.Join(argv, " "))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	if o.Env != nil {
		cmd.Env = append(os.Environ(), o.Env...)
	}
	cmd.Dir = o.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: !o.Detach, Setsid: o.Detach}
	if !o.Detach {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if o.Hook != nil {
		o.Hook(cmd)
	}
	start := o.Start
	if start == nil {
		start = (*exec.Cmd).Start
	}
	if err := start(cmd); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", o.Name, err)
	}
	p := &Proc{name: o.Name, log: o.Log, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// Name is the process's name; Log its log file; Pid its process id.
func (p *Proc) Name() string { return p.name }

// Log is the file the process's output is appended to.
func (p *Proc) Log() string { return p.log }

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the process exited and was waited for.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM, then SIGKILL after grace (at once when grace is 0),
// and returns once the process has been waited for. A nil process, or one
// that already exited, is success.
func (p *Proc) Stop(grace time.Duration) error {
	if p == nil || p.Exited() {
		return nil
	}
	if grace > 0 {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-p.done:
			return nil
		case <-t.C:
		}
	}
	_ = p.cmd.Process.Kill()
	t := time.NewTimer(killWait)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		return fmt.Errorf("%s (pid %d) still running %s after SIGKILL", p.name, p.Pid(), killWait)
	}
}

// ExitError describes the exited process (wrapping ErrExited) with the tail
// of its log.
func (p *Proc) ExitError() error {
	status := "exit status 0"
	if p.err != nil {
		status = p.err.Error()
	}
	return fmt.Errorf("%s: %w (%s)\n%s", p.name, ErrExited, status, LogTail(p.log, 25))
}

// Failure wraps err with the tail of the process's log.
func (p *Proc) Failure(err error) error {
	return fmt.Errorf("%w\n%s", err, LogTail(p.log, 25))
}

// LogTail returns the last maxLines lines (of the last 16 KiB) of a log
// file, labelled, for error messages.
func LogTail(path string, maxLines int) string {
	lines, err := lastLines(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	return fmt.Sprintf("--- last lines of %s ---\n%s", path, strings.Join(lines, "\n"))
}

// ErrorTail returns, labelled, the last maxLines lines of a log file that
// report an error or a warning (slog's level=ERROR and level=WARN, lines
// that say error, fatal or panic, and a program's last words as weftd and
// weft print them, "weftd: <error>"), or its last maxLines lines when none
// does: the cause of a failure, for the message that reports it.
func ErrorTail(path string, maxLines int) string {
	lines, err := lastLines(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	var bad []string
	for _, l := range lines {
		if isErrorLine(l) {
			bad = append(bad, l)
		}
	}
	what := "last lines"
	if len(bad) > 0 {
		lines, what = bad, "last errors"
	}
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	return fmt.Sprintf("--- %s of %s ---\n%s", what, path, strings.Join(lines, "\n"))
}

func isErrorLine(l string) bool {
	low := strings.ToLower(l)
	return strings.Contains(l, "level=ERROR") || strings.Contains(l, "level=WARN") ||
		strings.Contains(low, "error") || strings.Contains(low, "fatal") || strings.Contains(low, "panic:") ||
		strings.HasPrefix(l, "weftd: ") || strings.HasPrefix(l, "weft: ")
}

// lastLines reads the lines of the last 16 KiB of a log file.
func lastLines(path string) ([]string, error) {
	const maxBytes = 16 << 10
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > maxBytes {
		_, _ = f.Seek(-maxBytes, io.SeekEnd)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return strings.Split(strings.TrimRight(string(b), "\n"), "\n"), nil
}

// RSSKB returns a process's resident set size in kB (0 when unknown).
func RSSKB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			var kb int
			_, _ = fmt.Sscan(f[1], &kb)
			return kb
		}
	}
	return 0
}
