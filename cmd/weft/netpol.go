//go:build linux

package main

import (
	"context"
	"fmt"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/netpol"
	"github.com/weft-net/weft/internal/store/kube"
	"github.com/weft-net/weft/internal/version"
)

// networkPolicy reads this node's NetworkPolicy state (--network-policy):
// weft's nftables table in this network namespace and the Node's
// WeftNetworkPolicy condition.
func networkPolicy(ctx context.Context, opts config.Options) (*netpol.Summary, error) {
	k, err := netpol.NewKernel()
	if err != nil {
		return nil, fmt.Errorf("network policy: %w", err)
	}
	api, err := kube.Connect(opts.KubeAPIURL, opts.KubeConfigFile, "weft-status/"+version.String())
	if err != nil {
		return nil, fmt.Errorf("network policy: %w", err)
	}
	n, err := api.GetNode(ctx, opts.NodeName)
	if err != nil {
		return nil, fmt.Errorf("network policy: node %s: %w", opts.NodeName, err)
	}
	s, err := netpol.Inspect(ctx, k, n)
	if err != nil {
		return nil, fmt.Errorf("network policy: %w", err)
	}
	return &s, nil
}
