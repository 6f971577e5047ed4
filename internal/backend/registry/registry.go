//go:build linux

// Package registry lists the backend types of this build: the one list that
// net-conf.json validation, weftd, weft lab and weft lab bench read. Adding a
// backend is its own package and one line here.
package registry

import (
	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/backend/hostgw"
	"github.com/weft-net/weft/internal/backend/ipip"
	"github.com/weft-net/weft/internal/backend/udp"
	"github.com/weft-net/weft/internal/backend/vxlan"
	"github.com/weft-net/weft/internal/backend/wireguard"
)

// Default returns the backend types weftd runs with.
func Default() backend.Registry {
	return backend.Registry{
		vxlan.Type(),
		hostgw.Type(),
		udp.Type(),
		ipip.Type(),
		wireguard.Type(),
	}
}
