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

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/backend/registry"
	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/daemon"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/store"
	"github.com/weft-net/weft/internal/store/etcd"
	"github.com/weft-net/weft/internal/store/kube"
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
	opts, err := config.ParseOptions(args, lookupEnv)
	if err != nil {
		return err
	}
	switch {
	case opts.Help:
		config.Usage(stdout)
		return nil
	case opts.Version:
		fmt.Fprintln(stdout, "weftd", version.String())
		return nil
	}
	log := newLogger(stderr, opts.Verbosity)
	log.Info("starting weftd", "version", version.String(), "options", &opts)
	backends := registry.Default()
	st, err := newStore(log, &opts, backends)
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
	return daemon.Run(ctx, opts, daemon.Deps{
		Logger:    log,
		Store:     st,
		Backends:  backends,
		NewRules:  newRules(log, &opts),
		LookupEnv: lookupEnv,
		Ready:     markUp(ctx, &bg, log, st),
	})
}

// newStore builds the lease store the options select: the Kubernetes API
// (--kube-subnet-mgr; net-conf.json is read and checked, its Backend
// section against backends, before anything else) or etcd.
func newStore(log *slog.Logger, opts *config.Options, backends backend.Registry) (store.Store, error) {
	if !opts.KubeSubnetMgr {
		return etcd.New(etcd.Options{Endpoints: opts.EtcdEndpoints, Prefix: opts.EtcdPrefix, KeyFile: opts.EtcdKeyfile,
			CertFile: opts.EtcdCertfile, CAFile: opts.EtcdCAFile, Username: opts.EtcdUsername, Password: opts.EtcdPassword,
			Logger: log})
	}
	nc, err := kube.ReadNetConf(opts.NetConfigPath, log)
	if err != nil {
		return nil, err
	}
	if _, err := nc.ConfigureBackend(backends); err != nil { // weftd logs the warnings
		return nil, err
	}
	cli, err := kube.Connect(opts.KubeAPIURL, opts.KubeConfigFile, "weftd/"+version.String())
	if err != nil {
		return nil, err
	}
	return kube.New(kube.Options{API: cli, NodeName: opts.NodeName, PodName: opts.PodName, PodNamespace: opts.PodNamespace,
		Prefix: opts.KubeAnnotationPrefix, NetConf: nc, NetConfPath: opts.NetConfigPath,
		SetNodeNetworkUnavailable: opts.SetNodeNetworkUnavailable, Logger: log})
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
