//go:build linux

package kubeapi

import (
	"os/exec"

	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/proc"
)

// Process describes a running control-plane process.
type Process struct {
	Name string // "kube-apiserver" or "kube-controller-manager"
	PID  int
	Log  string // the file its output is appended to
}

// startProc starts argv with its output appended to logPath, inside the named
// network namespace when netns is set; with detach it outlives its starter
// (the lab), else it dies with it (proc.Options).
func startProc(name, logPath, netns string, detach bool, argv []string) (*proc.Proc, error) {
	o := proc.Options{Name: name, Log: logPath, Detach: detach}
	if netns != "" {
		o.Start = func(cmd *exec.Cmd) error { return lab.StartIn(netns, cmd) }
	}
	return proc.Start(o, argv)
}

// logTail returns the last lines of a log file, labelled, for error messages.
func logTail(path string) string { return proc.LogTail(path, 25) }
