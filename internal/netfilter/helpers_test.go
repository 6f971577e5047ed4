package netfilter_test

import (
	"log/slog"
	"net/netip"

	"github.com/weft-net/weft/internal/netfilter"
)

// What the plain tests and the kernel tests (*_linux_test.go) share.

// The test network: C and P per family.
const (
	c4 = "10.244.0.0/16"
	p4 = "10.244.1.0/24"
	c6 = "fd00:10:244::/56"
	p6 = "fd00:10:244:1::/64"
)

// testCfg is the dual-stack config the kernel tests start from.
func testCfg() netfilter.Config {
	return netfilter.Config{
		Masquerade: true,
		Forward:    true,
		Networks: []netfilter.Network{
			{Cluster: netip.MustParsePrefix(c4), Subnet: netip.MustParsePrefix(p4)},
			{Cluster: netip.MustParsePrefix(c6), Subnet: netip.MustParsePrefix(p6)},
		},
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
