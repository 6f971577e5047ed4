package cni

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
)

// Runner executes delegate plugins. args carries the CNI_* environment of
// the call (Command is set by the method); CNI_PATH in args.Path is where the
// plugin is looked up.
type Runner interface {
	// Add runs the plugin's ADD and returns its result, in conf's cniVersion.
	Add(ctx context.Context, pluginType string, conf []byte, args invoke.Args) (types.Result, error)
	// Run runs a command that returns no result: DEL, CHECK, STATUS or GC.
	// A failing plugin's error is (or wraps) a *types.Error.
	Run(ctx context.Context, command, pluginType string, conf []byte, args invoke.Args) error
}

// ExecRunner runs delegate plugins as processes, as libcni does.
type ExecRunner struct {
	exec invoke.Exec
}

var _ Runner = (*ExecRunner)(nil)

// NewExecRunner returns a Runner whose plugins inherit this process's
// environment (with the CNI_* variables of each call) and write their stderr
// to ours.
func NewExecRunner() *ExecRunner {
	return &ExecRunner{exec: &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}}}
}

func (r *ExecRunner) find(pluginType, path string) (string, error) {
	p, err := r.exec.FindInPath(pluginType, filepath.SplitList(path))
	if err != nil {
		return "", fmt.Errorf("find delegate plugin %q in CNI_PATH %q: %w", pluginType, path, err)
	}
	return p, nil
}

// Add implements Runner.
func (r *ExecRunner) Add(ctx context.Context, pluginType string, conf []byte, args invoke.Args) (types.Result, error) {
	p, err := r.find(pluginType, args.Path)
	if err != nil {
		return nil, err
	}
	args.Command = "ADD"
	return invoke.ExecPluginWithResult(ctx, p, conf, &args, r.exec)
}

// Run implements Runner.
func (r *ExecRunner) Run(ctx context.Context, command, pluginType string, conf []byte, args invoke.Args) error {
	p, err := r.find(pluginType, args.Path)
	if err != nil {
		return err
	}
	args.Command = command
	return invoke.ExecPluginWithoutResult(ctx, p, conf, &args, r.exec)
}
