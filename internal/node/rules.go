//go:build linux

package node

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/daemon"
	"github.com/weft-net/weft/internal/netfilter"
	"github.com/weft-net/weft/internal/netfilter/iptables"
	"github.com/weft-net/weft/internal/netfilter/nftables"
)

// How long the start-up work on the rules may take: detecting the iptables
// variant (up to six -save runs, each listing every rule kube-proxy has), and
// removing stale rules.
const (
	detectTimeout  = 30 * time.Second
	cleanupTimeout = 10 * time.Second
)

// NewRules returns the constructor of the masquerade and forward rule
// manager: nftables when net-conf.json says EnableNFTables, else iptables in
// the variant --iptables-mode selects (auto: detected as flannel's
// iptables-wrapper does; see iptables.Detect). It logs the choice and its
// reason on one Info line. weft's rules in the mode and variants not chosen
// are removed (best effort), so a node moved between them keeps no stale
// rules.
func NewRules(log *slog.Logger, o *config.Options) func(*config.NetConf) (daemon.Rules, error) {
	return newRules(log, o, netfilter.ExecRunner{})
}

// newRules is NewRules over run (tests run it inside a namespace).
func newRules(log *slog.Logger, o *config.Options, run netfilter.Runner) func(*config.NetConf) (daemon.Rules, error) {
	return func(nc *config.NetConf) (daemon.Rules, error) {
		log := log.With("component", "netfilter")
		if nc.EnableNFTables {
			log.Info("iptables mode not used: net-conf.json's EnableNFTables puts the rules in nftables tables flannel-ipv4 and flannel-ipv6",
				"iptables-mode", o.IPTablesMode)
			removeStale(log, o, run, nil)
			return nftables.NewManager(run, log, o.IPTablesResync), nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), detectTimeout)
		defer cancel()
		mode := iptablesMode(o)
		choice, err := iptables.Detect(ctx, run, mode)
		if err != nil {
			return nil, err
		}
		log.Info("iptables variant chosen", "binary", choice.Binary(), "iptables-mode", string(mode), "reason", choice.Reason)
		removeStale(log, o, run, &choice)
		return iptables.NewManager(run, log, choice.Options(), o.IPTablesResync), nil
	}
}

// iptablesMode is --iptables-mode; options not made by config.ParseOptions
// or config.Defaults (an empty mode) mean auto, the default.
func iptablesMode(o *config.Options) iptables.Mode {
	if o.IPTablesMode == "" {
		return iptables.ModeAuto
	}
	return iptables.Mode(o.IPTablesMode)
}

// removeStale removes weft's rules from the mode and iptables variants not
// in use: the nftables tables and the iptables variants other than keep, or,
// when keep is nil (nftables mode), every iptables variant.
func removeStale(log *slog.Logger, o *config.Options, run netfilter.Runner, keep *iptables.Choice) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if keep != nil {
		if err := nftables.NewManager(run, log, o.IPTablesResync).Cleanup(ctx); err != nil {
			log.Debug("no rules of the other mode to remove", "err", err)
		}
	}
	for _, c := range iptables.Holding(ctx, run) {
		if keep != nil && c.Variant == keep.Variant {
			continue
		}
		log.Info("removing weft's chains from an iptables variant not in use", "binary", c.Binary())
		if err := iptables.NewManager(run, log, c.Options(), o.IPTablesResync).Cleanup(ctx); err != nil {
			log.Warn("remove weft's chains from an iptables variant not in use", "binary", c.Binary(), "err", err)
		}
	}
}

// CheckRules describes how the kernel's masquerade and forward rules differ
// from what weftd with these options would install for cfg (weft status):
// in the same mode and iptables variant weftd would choose, and naming
// weft's chains in an iptables variant weftd would not use. Unlike NewRules
// it changes nothing.
func CheckRules(log *slog.Logger, o *config.Options) func(context.Context, *config.NetConf, netfilter.Config) ([]string, error) {
	return checkRules(log, o, netfilter.ExecRunner{})
}

// checkRules is CheckRules over run.
func checkRules(log *slog.Logger, o *config.Options, run netfilter.Runner) func(context.Context, *config.NetConf, netfilter.Config) ([]string, error) {
	return func(ctx context.Context, nc *config.NetConf, cfg netfilter.Config) ([]string, error) {
		if nc.EnableNFTables {
			diffs, err := nftables.NewManager(run, log, o.IPTablesResync).Check(ctx, cfg)
			if err != nil {
				return nil, err
			}
			for _, c := range iptables.Holding(ctx, run) {
				diffs = append(diffs, fmt.Sprintf("%s: weft's chains are there, but with EnableNFTables the rules belong in nftables", c.Binary()))
			}
			return diffs, nil
		}
		mode := iptablesMode(o)
		choice, err := iptables.Detect(ctx, run, mode)
		if err != nil {
			return nil, err
		}
		diffs, err := iptables.NewManager(run, log, choice.Options(), o.IPTablesResync).Check(ctx, cfg)
		if err != nil {
			return nil, err
		}
		for _, c := range iptables.Holding(ctx, run) {
			if c.Variant != choice.Variant {
				diffs = append(diffs, fmt.Sprintf("%s: weft's chains are there, but with --iptables-mode=%s they belong in %s (%s)",
					c.Binary(), mode, choice.Binary(), choice.Reason))
			}
		}
		return diffs, nil
	}
}
