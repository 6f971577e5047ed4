//go:build linux

package node

import (
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
		BridgeMasquerades: !opts.IPMasq})
}
