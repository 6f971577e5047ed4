//go:build linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"
)

// killWait bounds how long Down waits for killed processes to leave.
const killWait = 10 * time.Second

// Down removes lab name: it finds every namespace "<name>-*" in /run/netns,
// SIGKILLs every process inside one of them, deletes them (the kernel then
// destroys their links) and removes "<name>.json" from stateDir when stateDir
// is not empty. It needs no state from the process that built the lab, so it
// works after that process crashed, and it succeeds when nothing is left.
func Down(ctx context.Context, log *slog.Logger, name, stateDir string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	return down(ctx, logger(log).With("component", "lab", "lab", name), name, stateDir)
}

// down is Down with a logger already tagged with the lab.
func down(ctx context.Context, log *slog.Logger, name, stateDir string) error {
	nss, err := listNS(NSName(name, ""))
	if err != nil {
		return fmt.Errorf("down lab %s: %w", name, err)
	}
	var errs []error
	if err := killIn(ctx, log, nss); err != nil {
		errs = append(errs, err)
	}
	for _, ns := range nss {
		if err := deleteNS(ns); err != nil {
			errs = append(errs, err)
			continue
		}
		log.Debug("netns deleted", "ns", ns)
	}
	if stateDir != "" {
		if err := os.Remove(statePath(stateDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove state file: %w", err))
		}
	}
	if left, err := listNS(NSName(name, "")); err != nil || len(left) > 0 {
		errs = append(errs, fmt.Errorf("namespaces left: %v %w", left, err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("down lab %s: %w", name, err)
	}
	if len(nss) > 0 {
		log.Info("lab down", "namespaces", len(nss))
	}
	return nil
}

// killIn SIGKILLs every process in one of the namespaces nss and waits until
// none is left in them.
func killIn(ctx context.Context, log *slog.Logger, nss []string) error {
	ids := map[nsID]string{}
	for _, ns := range nss {
		id, err := statNS(NSPath(ns))
		if err != nil {
			continue // not a mounted namespace (half-made): nothing can be in it
		}
		ids[id] = ns
	}
	if len(ids) == 0 {
		return nil
	}
	deadline := time.Now().Add(killWait)
	for {
		pids, err := pidsIn(ids)
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v still in lab namespaces after %v", pids, killWait)
		}
		for _, pid := range pids {
			if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
				log.Debug("killed process in lab namespace", "pid", pid)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for processes %v: %w", pids, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// List returns the names of the labs that have namespaces in /run/netns: the
// names of every "<lab>-sw" namespace whose prefix is a valid lab name.
func List() ([]string, error) {
	nss, err := listNS("")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, ns := range nss {
		name, ok := strings.CutSuffix(ns, "-sw")
		if ok && ValidateName(name) == nil {
			out = append(out, name)
		}
	}
	return out, nil
}

// Namespaces returns the namespaces of lab name that exist now, sorted.
func Namespaces(name string) ([]string, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	return listNS(NSName(name, ""))
}

// logger returns log, or a logger that discards everything when log is nil.
func logger(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}
