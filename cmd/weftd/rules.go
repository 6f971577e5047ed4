package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/daemon"
	"github.com/weft-net/weft/internal/netfilter"
	"github.com/weft-net/weft/internal/netfilter/iptables"
	"github.com/weft-net/weft/internal/netfilter/nftables"
)

// newRules returns the constructor of the masquerade and forward rule
// manager: nftables when net-conf.json says EnableNFTables, else iptables.
// The other mode's rules are removed (best effort), so a node moved between
// modes does not keep stale rules.
func newRules(log *slog.Logger, o *config.Options) func(*config.NetConf) (daemon.Rules, error) {
	return func(nc *config.NetConf) (daemon.Rules, error) {
		run := netfilter.ExecRunner{}
		log := log.With("component", "netfilter")
		ipt := iptables.NewManager(run, log, iptables.Options{}, o.IPTablesResync)
		nft := nftables.NewManager(run, log, o.IPTablesResync)
		use, other := ipt, nft
		if nc.EnableNFTables {
			use, other = nft, ipt
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := other.Cleanup(ctx); err != nil {
			log.Debug("no rules of the other mode to remove", "err", err)
		}
		return use, nil
	}
}
