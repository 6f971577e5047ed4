package netfilter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// Runner runs one command. Backends use it for every kernel access, so tests
// can run them inside a network namespace (ExecRunner with an `ip netns exec`
// prefix) and count or fake the calls.
type Runner interface {
	// Run runs name with args, feeding it stdin (may be nil), and returns
	// its standard output. A command that ran and failed returns a
	// *CommandError; a binary that is not installed returns an error for
	// which errors.Is(err, exec.ErrNotFound) holds.
	Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error)
}

// ExecRunner runs commands with os/exec. A non-empty Prefix is prepended to
// every command line, e.g. {"ip", "netns", "exec", "ns1"}.
type ExecRunner struct {
	Prefix []string
}

var _ Runner = ExecRunner{}

// Run implements Runner. It looks name up in PATH first so a missing binary
// gives a clear error even behind a prefix.
func (r ExecRunner) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	if _, err := exec.LookPath(name); err != nil {
		return nil, fmt.Errorf("%s is needed for weft's masquerade and forward rules but is not installed: %w", name, err)
	}
	argv := append(append(append([]string{}, r.Prefix...), name), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		cerr := &CommandError{Args: append([]string{name}, args...), Stderr: strings.TrimSpace(stderr.String()), Err: err}
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			cerr.ExitCode = exitErr.ExitCode()
		}
		return stdout.Bytes(), cerr
	}
	return stdout.Bytes(), nil
}

// CommandError is a command that ran and failed.
type CommandError struct {
	Args     []string
	ExitCode int // -1 or 0 when the command did not exit normally
	Stderr   string
	Err      error
}

func (e *CommandError) Error() string {
	msg := fmt.Sprintf("%s: %v", strings.Join(e.Args, " "), e.Err)
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

func (e *CommandError) Unwrap() error { return e.Err }

// ExitCode returns the exit code of a failed command in err's chain, or -1
// when err is not a *CommandError (e.g. the binary is missing).
func ExitCode(err error) int {
	var cerr *CommandError
	if errors.As(err, &cerr) {
		return cerr.ExitCode
	}
	return -1
}
