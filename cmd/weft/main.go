//go:build linux

// Command weft is the operator's tool: the node's status (weft status) and
// the version. It ships in weft's image beside weftd. `weft lab ...` runs the
// separate weft-lab binary (cmd/weft-lab), so this one links no lab code.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/weft-net/weft/internal/version"
)

const usage = `usage: weft <command>

commands:
  lab        a whole weft cluster in network namespaces: weft lab up|status|exec|down|list|bench
             (runs the weft-lab binary, found beside weft or in PATH)
  status     is this node's network right? the kernel against the store (weft status --help)
  version    print weft's version
  help       print this help
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "weft:", err)
		var ec exitCode
		if errors.As(err, &ec) {
			os.Exit(ec.code)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stdout, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "weft", version.String())
		return nil
	case "help", "--help", "-help", "-h":
		fmt.Fprint(stdout, usage)
		return nil
	case "status":
		return status(ctx, args[1:], lookupEnv, stdout)
	case "lab":
		lab, err := findLab(os.Executable, exec.LookPath)
		if err != nil {
			return err
		}
		// weft-lab takes this process over: its output, signals and
		// exit status are the command's own.
		return syscall.Exec(lab, append([]string{lab}, args[1:]...), os.Environ())
	}
	return fmt.Errorf("unknown command %q (see weft help)", args[0])
}

// findLab finds the weft-lab binary: beside this one (make build puts both
// in ./bin), else in PATH.
func findLab(self func() (string, error), lookPath func(string) (string, error)) (string, error) {
	var beside string
	if s, err := self(); err == nil {
		beside = filepath.Join(filepath.Dir(s), "weft-lab")
		if fi, err := os.Stat(beside); err == nil && !fi.IsDir() {
			return beside, nil
		}
	}
	if p, err := lookPath("weft-lab"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("weft lab needs the weft-lab binary, which is neither at %s nor in PATH "+
		"(make build puts it in ./bin beside weft; the lab is not part of weft's image)", beside)
}
