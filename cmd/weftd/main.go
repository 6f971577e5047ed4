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
	"syscall"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/backend/hostgw"
	"github.com/weft-net/weft/internal/backend/udp"
	"github.com/weft-net/weft/internal/backend/vxlan"
	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/daemon"
	"github.com/weft-net/weft/internal/store/etcd"
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
	if opts.KubeSubnetMgr {
		if err := checkNetConf(log, opts.NetConfigPath); err != nil {
			return err
		}
		return errors.New("--kube-subnet-mgr: the Kubernetes lease store is not in this build yet; use etcd")
	}
	st, err := etcd.New(etcd.Options{Endpoints: opts.EtcdEndpoints, Prefix: opts.EtcdPrefix, KeyFile: opts.EtcdKeyfile,
		CertFile: opts.EtcdCertfile, CAFile: opts.EtcdCAFile, Username: opts.EtcdUsername, Password: opts.EtcdPassword,
		Logger: log})
	if err != nil {
		return err
	}
	defer st.Close()
	return daemon.Run(ctx, opts, daemon.Deps{
		Logger:    log,
		Store:     st,
		Backends:  backends(),
		NewRules:  newRules(log, &opts),
		LookupEnv: lookupEnv,
	})
}

// backends is the explicit registry of the data planes in this build.
func backends() backend.Registry {
	return backend.Registry{
		config.BackendVXLAN:  vxlan.New,
		config.BackendHostGW: hostgw.New,
		config.BackendUDP:    udp.New,
	}
}

func newLogger(w io.Writer, verbosity int) *slog.Logger {
	level := slog.LevelInfo
	if verbosity > 0 {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// checkNetConf reads and validates net-conf.json, logging its warnings.
func checkNetConf(log *slog.Logger, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read --net-config-path: %w", err)
	}
	_, warnings, err := config.ParseNetConf(data)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for _, w := range warnings {
		log.Warn(w, "file", path)
	}
	return nil
}
