//go:build linux

package kubeapi

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/weft-net/weft/internal/lab"
)

// killWait bounds how long stop waits for a process after SIGKILL.
const killWait = 10 * time.Second

// proc is one process a control plane started.
type proc struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{} // closed once the process exited and was waited for
	err  error         // Wait's result; read only after done
}

// Process describes a running control-plane process.
type Process struct {
	Name string // "kube-apiserver" or "kube-controller-manager"
	PID  int
	Log  string // the file its output is appended to
}

// startProc starts argv with its output appended to logPath, inside the named
// network namespace when netns is set. Unless detach is set, the process is
// in a process group of its own and is killed by the kernel if this process
// dies (PR_SET_PDEATHSIG), so a killed test leaves nothing behind; with
// detach it is in a session of its own and outlives its starter (the lab).
func startProc(name, logPath, netns string, detach bool, argv []string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", name, err)
	}
	fmt.Fprintf(f, "==== %s: %s\n", time.Now().Format(time.RFC3339), strings.Join(argv, " "))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: !detach, Setsid: detach}
	if !detach {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if netns != "" {
		err = lab.StartIn(netns, cmd)
	} else {
		err = cmd.Start()
	}
	if err != nil {
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

// stop sends SIGTERM, then SIGKILL after grace (at once when grace is 0),
// and returns once the process has been waited for. A process that already
// exited is success.
func (p *proc) stop(grace time.Duration) error {
	if p.exited() {
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
		return fmt.Errorf("%s (pid %d) still running %s after SIGKILL", p.name, p.pid(), killWait)
	}
}

// exitError describes an exited process with the tail of its log.
func (p *proc) exitError() error {
	status := "exit status 0"
	if p.err != nil {
		status = p.err.Error()
	}
	return fmt.Errorf("%s: %w (%s)\n%s", p.name, ErrExited, status, logTail(p.log))
}

// failure wraps err with the tail of the process's log.
func (p *proc) failure(err error) error {
	return fmt.Errorf("%w\n%s", err, logTail(p.log))
}

// logTail returns the last lines of a log file, labelled, for error messages.
func logTail(path string) string {
	const maxBytes, maxLines = 8 << 10, 25
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
