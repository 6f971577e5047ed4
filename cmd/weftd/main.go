// Command weftd is weft's node daemon, the flanneld replacement. main holds
// the only os.Exit; run does the work.
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/version"
)

// errNotImplemented ends a run whose configuration is valid but that this
// build cannot serve yet: weftd must not pretend to run.
var errNotImplemented = errors.New("this build validates its configuration only: the lease store and data plane " +
	"land with the daemon issue, so weftd exits without touching the node")

func main() {
	if err := run(os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "weftd:", err)
		if errors.Is(err, config.ErrFlag) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func run(args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
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
	}
	return errNotImplemented
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
	nc, warnings, err := config.ParseNetConf(data)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for _, w := range warnings {
		log.Warn(w, "file", path)
	}
	for _, f := range nc.Families() {
		log.Info("network", "network", f.Network, "subnet-len", f.SubnetLen, "subnet-min", f.SubnetMin, "subnet-max", f.SubnetMax)
	}
	log.Info("backend", "type", nc.Backend.Type)
	return nil
}
