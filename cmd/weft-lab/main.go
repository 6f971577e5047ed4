//go:build linux

// Command weft-lab is the local lab and the bench: a whole weft cluster in
// network namespaces (weft-lab up|status|exec|down|list|bench), and the etcd
// server the lab runs in its switch namespace (weft-lab etcd). The
// operator's `weft lab ...` runs this binary, so the operator's CLI links no
// lab code; make build puts both in ./bin.
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
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var ec cli.ExitError
		if errors.As(err, &ec) {
			os.Exit(ec.Code)
		}
		fmt.Fprintln(os.Stderr, "weft:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the weft-lab binary: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return cli.Run(ctx, args, cli.Env{Stdout: stdout, Stderr: stderr, Logger: log, Self: self})
}
