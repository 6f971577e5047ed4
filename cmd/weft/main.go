//go:build linux

// Command weft is the operator's tool: the node's status (weft status), the
// local lab (weft lab ...) and the version.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/weft-net/weft/internal/lab/cli"
	"github.com/weft-net/weft/internal/version"
)

const usage = `usage: weft <command>

commands:
  lab        a whole weft cluster in network namespaces: weft lab up|status|exec|down|list
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
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find the weft binary: %w", err)
		}
		log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		return cli.Run(ctx, args[1:], cli.Env{Stdout: stdout, Stderr: stderr, Logger: log, Self: self})
	}
	return fmt.Errorf("unknown command %q (see weft help)", args[0])
}
