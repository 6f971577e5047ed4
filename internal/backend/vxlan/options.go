//go:build linux

package vxlan

import (
	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/config"
)

// Name is the backend type.
const Name = "vxlan"

// Options are the vxlan backend's net-conf.json options.
type Options struct {
	VNI           int  // 0..16777215, default 1
	Port          int  // UDP destination port, default 8472
	GBP           bool // Group Based Policy extension
	Learning      bool // let the kernel learn FDB entries
	DirectRouting bool // plain routes to peers on a directly connected subnet
	MTU           int  // 0: external MTU - 50 (70 with IPv6)
}

// ParseOptions reads the options of c.Backend with their defaults.
func ParseOptions(c *config.NetConf) (Options, []string, error) {
	o := Options{VNI: 1, Port: 8472}
	w, err := c.Backend.ReadOptions([]config.Option{
		config.IntOption("VNI", &o.VNI, 0, 1<<24-1), config.IntOption("Port", &o.Port, 0, 65535),
		config.BoolOption("GBP", &o.GBP), config.BoolOption("Learning", &o.Learning),
		config.BoolOption("DirectRouting", &o.DirectRouting), config.IntOption("MTU", &o.MTU, 0, 65535)})
	if err == nil {
		err = c.CheckMTU(o.MTU)
	}
	return o, w, err
}

// Type is the vxlan backend type for the registry.
func Type() backend.Type {
	return backend.Type{
		Name:     Name,
		Validate: backend.Validator(ParseOptions),
		New:      New,
	}
}
