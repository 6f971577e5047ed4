//go:build unix

// Command pause is the sandbox ("infra") container of weft's lab pods, in the
// image weft.local/pause:3.10 that hack/node-images.sh builds: it holds the
// pod's namespaces open and does nothing else, like Kubernetes' own pause.
//
// As PID 1 of a pod that shares its PID namespace it is the init that orphaned
// processes are reparented to, so it reaps every child that exits (on each
// SIGCHLD, all of them, without blocking). SIGINT and SIGTERM end it with
// status 0; it ignores every other signal. Built static (CGO_ENABLED=0).
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-v" || os.Args[1] == "--version") {
		fmt.Println("pause 3.10 (weft)")
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "pause: warning: not PID 1, so orphaned processes are not reparented here")
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	reap() // children that exited before Notify
	for sig := range sigs {
		switch sig {
		case syscall.SIGCHLD:
			reap()
		default:
			fmt.Fprintf(os.Stderr, "pause: shutting down, got %v\n", sig)
			os.Exit(0)
		}
	}
}

// reap waits for every child that has exited, without blocking: signals of
// several children that exit together may arrive as one SIGCHLD.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil { // 0: none exited yet; ECHILD: no children
			return
		}
	}
}
