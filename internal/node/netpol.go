//go:build linux

package node

import (
	"context"
	"log/slog"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/netpol"
	"github.com/weft-net/weft/internal/store/kube"
)

// NewNetworkPolicy builds the NetworkPolicy controller of --network-policy:
// the API client of the store's flags, nftables and conntrack in weftd's
// own network namespace.
func NewNetworkPolicy(log *slog.Logger, opts *config.Options, userAgent string) (*netpol.Controller, error) {
	cfg, err := kube.RESTConfig(opts.KubeAPIURL, opts.KubeConfigFile)
	if err != nil {
		return nil, err
	}
	cfg.UserAgent = userAgent
	ct, err := netpol.NewConntrack()
	if err != nil {
		return nil, err
	}
	return netpol.New(netpol.Options{Config: cfg, Node: opts.NodeName, Logger: log.With("component", "netpol"), Conntrack: ct,
		BridgeMasquerades: !opts.IPMasq, LogDrops: opts.NetworkPolicyLogDrops})
}

// RemoveNetworkPolicy deletes the NetworkPolicy table a run with
// --network-policy left, for a weftd started without it: off means off, and
// stale rules would police pods whose addresses have changed since. Without
// nft or nf_tables there is nothing to remove.
func RemoveNetworkPolicy(ctx context.Context, log *slog.Logger) error {
	k, err := netpol.NewKernel()
	if err != nil {
		return nil
	}
	removed, err := netpol.RemoveTable(ctx, k)
	if err != nil {
		return err
	}
	if removed {
		log.Info("removed the NetworkPolicy table inet " + netpol.TableName + " a run with --network-policy left: --network-policy is off")
	}
	return nil
}
