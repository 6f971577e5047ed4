//go:build linux

// Command weftd is weft's node daemon, the flanneld replacement. main holds
// the only os.Exit; run does the work.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"

	"github.com/weft-net/weft/internal/backend/registry"
	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/control"
	"github.com/weft-net/weft/internal/daemon"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/metrics"
	"github.com/weft-net/weft/internal/node"
	"github.com/weft-net/weft/internal/store"
	"github.com/weft-net/weft/internal/version"
)

func main() {
	// weftd holds a few compact maps per peer and is idle between lease
	// events, so a tighter GC target costs little CPU and keeps RSS near the
	// live heap. GOGC in the environment still wins.
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(50)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "weftd:", err)
		if errors.Is(err, config.ErrFlag) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	backends := registry.Default()
	opts, err := config.ParseOptions(args, lookupEnv, backends.Settings())
	if err != nil {
		return err
	}
	switch {
	case opts.Help:
		config.Usage(stdout, backends.Settings())
		return nil
	case opts.Version:
		fmt.Fprintln(stdout, "weftd", version.String())
		return nil
	}
	log := newLogger(stderr, opts.Verbosity)
	log.Info("starting weftd", "version", version.String(), "options", &opts)
	st, err := node.NewStore(log, &opts, backends, "weftd/"+version.String())
	if err != nil {
		return err
	}
	if c, ok := st.(store.Closer); ok {
		defer c.Close()
	}
	// Background work the daemon's Ready hook starts ends with run.
	var bg sync.WaitGroup
	defer bg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	serveControl(ctx, &bg, log, args, lookupEnv)
	m := metrics.New(version.Release)
	if opts.NetworkPolicy {
		if err := startNetworkPolicy(ctx, &bg, log, &opts, m); err != nil {
			return err
		}
	} else if err := node.RemoveNetworkPolicy(ctx, log); err != nil {
		log.Warn("could not remove the NetworkPolicy table of an earlier run with --network-policy", "err", err)
	}
	return daemon.Run(ctx, opts, daemon.Deps{
		Logger:   log,
		Store:    st,
		Backends: backends,
		NewRules: node.NewRules(log, &opts),
		Ready:    markUp(ctx, &bg, log, st),
		Metrics:  m,
	})
}

// startNetworkPolicy runs the NetworkPolicy controller (--network-policy)
// beside the daemon, in the background tracked by bg, until ctx ends.
func startNetworkPolicy(ctx context.Context, bg *sync.WaitGroup, log *slog.Logger, opts *config.Options, m *metrics.Metrics) error {
	np, err := node.NewNetworkPolicy(log, opts, "weftd/"+version.String())
	if err != nil {
		return fmt.Errorf("network policy: %w", err)
	}
	if err := m.Registry().Register(np.Collector()); err != nil {
		return fmt.Errorf("network policy metrics: %w", err)
	}
	bg.Go(func() {
		if err := np.Run(ctx); err != nil {
			log.Error("network policy controller stopped", "err", err)
		}
	})
	return nil
}

// serveControl answers `weft status` on this namespace's control socket
// with weftd's command line and environment, in the background until ctx
// ends; without it, weft status needs weftd's flags repeated, so a failure
// is a warning, not fatal.
func serveControl(ctx context.Context, bg *sync.WaitGroup, log *slog.Logger, args []string, lookupEnv func(string) (string, bool)) {
	names := append(config.EnvNames(registry.Default().Settings()), "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
	info := control.Info{Version: version.String(), PID: os.Getpid(), Args: args, Env: control.EnvOf(names, lookupEnv)}
	bg.Add(1)
	go func() {
		defer bg.Done()
		if err := control.Serve(ctx, log.With("component", "control"), control.Name, info); err != nil {
			log.Warn("no control socket: weft status on this node needs weftd's flags repeated", "err", err)
		}
	}()
}

// markUp is the daemon's Ready hook for stores that publish that the node
// is up (store.Readier: the Node's NetworkUnavailable condition); it runs
// in the background, tracked by bg, until it succeeds or ctx ends.
func markUp(ctx context.Context, bg *sync.WaitGroup, log *slog.Logger, st store.Store) func(lease.Lease) {
	r, ok := st.(store.Readier)
	if !ok {
		return nil
	}
	return func(lease.Lease) {
		bg.Go(func() {
			if err := r.MarkUp(ctx); err != nil && ctx.Err() == nil {
				log.Warn("mark the node up", "err", err)
			}
		})
	}
}

func newLogger(w io.Writer, verbosity int) *slog.Logger {
	level := slog.LevelInfo
	if verbosity > 0 {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}
