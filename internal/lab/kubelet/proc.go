//go:build linux

package kubelet

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// proc is one process the lab started (through nsenter, which execs the
// program, so the pid is the program's).
type proc struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{} // closed once the process exited and was waited for
	err  error         // Wait's result; read only after done
}

// startProc starts argv with env appended to this process's environment and
// its output appended to logPath, in a process group of its own; the kernel
// kills it when this process dies (PR_SET_PDEATHSIG), so a killed test leaves
// no kubelet or containerd behind (containerd's shims and the containers are
// a different matter: Down and Purge find them by namespace and cgroup).
func startProc(name, logPath string, env []string, argv []string) (*proc, error) {
	return startProcHook(name, logPath, env, argv, nil)
}

// startProcHook is startProc with hook, when not nil, called on the command
// before it starts.
func startProcHook(name, logPath string, env []string, argv []string, hook func(*exec.Cmd)) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", name, err)
	}
	fmt.Fprintf(f, "==== %s: %s\n", time.Now().Format(time.RFC3339), strings.Join(argv, " "))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if hook != nil {
		hook(cmd)
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, then SIGKILL after grace, and returns once the process
// has been waited for. A nil or exited process is success.
func (p *proc) stop(grace time.Duration) error {
	if p == nil || p.exited() {
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
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		return fmt.Errorf("%s (pid %d) still running 10s after SIGKILL", p.name, p.pid())
	}
}

// exitError describes an exited process with the tail of its log.
func (p *proc) exitError() error {
	status := "exit status 0"
	if p.err != nil {
		status = p.err.Error()
	}
	return fmt.Errorf("%s exited (%s)\n%s", p.name, status, logTail(p.log, 25))
}

// logTail returns the last lines of a log file, labelled.
func logTail(path string, maxLines int) string {
	const maxBytes = 16 << 10
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > maxBytes {
		_, _ = f.Seek(-maxBytes, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	return fmt.Sprintf("--- last lines of %s ---\n%s", path, bytes.Join(lines, []byte("\n")))
}

// rssKB returns a process's resident set size in kB (0 when unknown).
func rssKB(pid int) int {
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

func killPid(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }
