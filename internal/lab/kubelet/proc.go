//go:build linux

package kubelet

import (
	"os/exec"
	"syscall"

	sup "github.com/weft-net/weft/internal/proc"
)

// proc is one process the lab started (through nsenter, which execs the
// program, so the pid is the program's).
type proc = sup.Proc

// startProc starts argv with env appended to this process's environment and
// its output appended to logPath. Unless detach is set it is in a process
// group of its own and the kernel kills it when this process dies
// (PR_SET_PDEATHSIG), so a killed test leaves no kubelet or containerd behind
// (containerd's shims and the containers are a different matter: Down and
// Purge find them by namespace and cgroup). With detach it is in a session
// of its own and outlives this process (`weft lab up --kubelet`); Purge
// finds it by its pid in kubelet.json and by its namespace.
func startProc(name, logPath string, detach bool, env []string, argv []string) (*proc, error) {
	return startProcHook(name, logPath, detach, env, argv, nil)
}

// startProcHook is startProc with hook, when not nil, called on the command
// before it starts.
func startProcHook(name, logPath string, detach bool, env []string, argv []string, hook func(*exec.Cmd)) (*proc, error) {
	return sup.Start(sup.Options{Name: name, Log: logPath, Env: env, Dir: "/", Detach: detach, Hook: hook}, argv)
}

// logTail returns the last lines of a log file, labelled.
func logTail(path string, maxLines int) string { return sup.LogTail(path, maxLines) }

// rssKB returns a process's resident set size in kB (0 when unknown).
func rssKB(pid int) int { return sup.RSSKB(pid) }

func killPid(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }
