//go:build linux

// Package cli is `weft lab`: up, down, status, exec, and the internal
// etcd command the lab runs in its switch namespace. It drives the same
// internal/lab and internal/lab/cluster code the end-to-end tests use.
//
// A lab lives in namespaces named "<name>-*" and in the directory
// <state-root>/<name> (default /run/weft-lab/<name>): the topology's state
// file, etcd's data and log, and per node its subnet.env, CNI state and
// weftd.log. `weft lab up` leaves etcd and the weftd processes running and
// returns; `weft lab down` finds everything by the lab's name, so it also
// cleans up after a crashed `up`. `weft lab up --kubelet` makes a lab of real
// nodes (internal/lab/kubelet) in the same directory, left running the same
// way; status, exec and down recognise it by its kubelet.json and host.json
// (kubelet.go), and down removes it with kubelet.Purge.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/kubelet"
)

// DefaultStateRoot holds one directory per lab.
const DefaultStateRoot = "/run/weft-lab"

// Env is what the commands run with.
type Env struct {
	Stdout, Stderr io.Writer
	Logger         *slog.Logger
	// Self is the weft-lab binary (it runs `weft-lab etcd` in the switch
	// namespace).
	Self string
	// BinDir holds weft, weftd and cni/; default: the directory of Self.
	BinDir string
}

const usage = `usage: weft lab <command> [flags]

commands:
  up      build a lab and start etcd (--store kube: and a Kubernetes control plane), a weftd per node and pods;
          print the nodes and a ping matrix. --kubelet: real nodes instead (containerd and kubelet per node, weft
          deployed by its manifest and image, a Deployment of test pods; one such lab at a time)
  status  print the nodes, pods and each daemon's /readyz again
  exec    run a command in a node or pod: weft lab exec [--name N] n1|n1-p2 -- <command>
  down    remove every namespace, process and file of a lab (also after a crash)
  list    list the labs that exist
  bench   measure every backend, the control plane and the CNI plugin against same-run baselines

Run 'weft lab <command> --help' for its flags.
`

// Run runs `weft lab <args>`.
func Run(ctx context.Context, args []string, env Env) error {
	if env.Logger == nil {
		env.Logger = slog.New(slog.DiscardHandler)
	}
	if env.BinDir == "" && env.Self != "" {
		env.BinDir = filepath.Dir(env.Self)
	}
	if len(args) == 0 {
		fmt.Fprint(env.Stdout, usage)
		return errors.New("no lab command given")
	}
	cmds := map[string]func(context.Context, []string, Env) error{
		"up": up, "down": down, "status": status, "exec": execIn, "list": list, "etcd": serveEtcd,
		"bench": runBench,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		if args[0] == "help" || args[0] == "--help" || args[0] == "-h" {
			fmt.Fprint(env.Stdout, usage)
			return nil
		}
		return fmt.Errorf("unknown lab command %q (see weft lab help)", args[0])
	}
	return cmd(ctx, args[1:], env)
}

// ExitError is a command's own exit status, which `weft lab exec` passes
// on: the command has already said what it had to on its own stderr.
type ExitError struct {
	Code    int
	Command string
}

func (e ExitError) Error() string { return fmt.Sprintf("%s exited with %d", e.Command, e.Code) }

// exitOf turns a command's exit status into an ExitError.
func exitOf(command string, err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() > 0 {
		return ExitError{Code: ee.ExitCode(), Command: command}
	}
	if err != nil {
		return fmt.Errorf("run %s: %w", command, err)
	}
	return nil
}

// common are the flags every command takes.
type common struct {
	name, root string
}

func (c *common) add(fs *flag.FlagSet) {
	fs.StringVar(&c.name, "name", "weft", "the lab's name (1-8 of [a-z0-9]); two labs with different names can run at once")
	fs.StringVar(&c.root, "state-root", DefaultStateRoot, "directory holding one directory per lab")
}

func (c *common) dir() string { return filepath.Join(c.root, c.name) }

func newFlags(name string, env Env) *flag.FlagSet {
	fs := flag.NewFlagSet("weft lab "+name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	return fs
}

func down(ctx context.Context, args []string, env Env) error {
	var c common
	fs := newFlags("down", env)
	c.add(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !labExists(c) {
		return fmt.Errorf("there is no lab %s (no namespace %s-* and no %s; weft lab list shows the labs)", c.name, c.name, c.dir())
	}
	what := "its processes, namespaces and"
	if kubelet.IsLab(c.name, c.dir()) {
		what = "a kubelet lab: its processes, cgroups, namespaces, the host's mount points and sysctls it changed, its lock and"
	}
	fmt.Fprintf(env.Stdout, "removing lab %s: %s %s\n", c.name, what, c.dir())
	if err := labDown(ctx, env, c); err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, "lab", c.name, "removed")
	return nil
}

// labExists says whether anything of lab c is left: a namespace, its
// directory, or a kubelet lab.
func labExists(c common) bool {
	if ns, _ := lab.Namespaces(c.name); len(ns) > 0 {
		return true
	}
	if _, err := os.Stat(c.dir()); err == nil {
		return true
	}
	return kubelet.IsLab(c.name, c.dir())
}

func labDown(ctx context.Context, env Env, c common) error {
	if kubelet.IsLab(c.name, c.dir()) {
		// Its processes, cgroups, the host's mount points and sysctls, the
		// lock, then the namespaces and the directory.
		return kubelet.Purge(ctx, env.Logger, c.name, c.dir())
	}
	if err := lab.Down(ctx, env.Logger, c.name, c.dir()); err != nil {
		return err
	}
	if err := os.RemoveAll(c.dir()); err != nil {
		return fmt.Errorf("remove %s: %w", c.dir(), err)
	}
	return nil
}
