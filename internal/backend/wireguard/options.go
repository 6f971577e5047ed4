//go:build linux

package wireguard

import (
	"fmt"
	"log/slog"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/config"
)

// Name is the backend type.
const Name = "wireguard"

// The devices, as flannel names them.
const (
	DeviceName   = "flannel-wg"
	DeviceNameV6 = "flannel-wg-v6"
)

// Overhead is what WireGuard adds to a packet, as flannel counts it: a
// 40-byte IPv6 header (20 for IPv4), 8 of UDP, 16 of WireGuard's header
// (type, key index, nonce) and the 16-byte authentication tag.
const Overhead = 80

// The Modes, as flannel defines them.
const (
	// ModeSeparate: flannel-wg carries IPv4 (ListenPort), flannel-wg-v6
	// IPv6 (ListenPortV6), each over its own family.
	ModeSeparate = "separate"
	// ModeAuto: one device, flannel-wg, carries both families; a peer's
	// endpoint is its IPv4 address unless only IPv6 is likely to connect.
	ModeAuto = "auto"
	// ModeIPv4 and ModeIPv6: one device, flannel-wg, carries both
	// families over the named one.
	ModeIPv4 = "ipv4"
	ModeIPv6 = "ipv6"
)

// Options are the wireguard backend's net-conf.json options.
type Options struct {
	ListenPort   int // flannel-wg's UDP port, default 51820
	ListenPortV6 int // flannel-wg-v6's UDP port (Mode separate), default 51821
	// MTU is the MTU the overhead is taken from: 0 means the external
	// interface's. The devices and the pods get MTU - 80.
	MTU int
	// PSK is a base64 pre-shared key every peer is configured with ("" for
	// none). A secret: never logged.
	PSK string
	// PersistentKeepaliveInterval is in seconds; 0 sends no keepalives.
	PersistentKeepaliveInterval int
	Mode                        string
}

// String leaves the PSK out, so that a logged Options never carries it.
func (o Options) String() string {
	psk := "none"
	if o.PSK != "" {
		psk = "set"
	}
	return fmt.Sprintf("ListenPort=%d ListenPortV6=%d MTU=%d PSK=%s PersistentKeepaliveInterval=%d Mode=%s",
		o.ListenPort, o.ListenPortV6, o.MTU, psk, o.PersistentKeepaliveInterval, o.Mode)
}

// LogValue logs Options as String does (a JSON log handler would otherwise
// print the PSK field).
func (o Options) LogValue() slog.Value { return slog.StringValue(o.String()) }

// ParseOptions reads the options of c.Backend with flannel's defaults.
func ParseOptions(c *config.NetConf) (Options, []string, error) {
	o := Options{ListenPort: 51820, ListenPortV6: 51821, Mode: ModeSeparate}
	w, err := c.Backend.ReadOptions([]config.Option{
		config.IntOption("ListenPort", &o.ListenPort, 1, 65535),
		config.IntOption("ListenPortV6", &o.ListenPortV6, 1, 65535),
		config.IntOption("MTU", &o.MTU, 0, 65535),
		config.KeyOption("PSK", &o.PSK),
		config.IntOption("PersistentKeepaliveInterval", &o.PersistentKeepaliveInterval, 0, 65535),
		config.EnumOption("Mode", &o.Mode, ModeSeparate, ModeAuto, ModeIPv4, ModeIPv6),
	})
	if err != nil {
		return Options{}, nil, err
	}
	if o.MTU != 0 {
		if err := c.CheckMTU(max(o.MTU-Overhead, 1)); err != nil {
			return Options{}, nil, fmt.Errorf("%w (Backend.MTU %d less WireGuard's %d bytes)", err, o.MTU, Overhead)
		}
	}
	if o.Mode == ModeSeparate && c.IPv4.Enabled && c.IPv6.Enabled && o.ListenPort == o.ListenPortV6 {
		return Options{}, nil, fmt.Errorf("%w: Backend.ListenPort and ListenPortV6 are both %d; Mode separate runs two devices, each on its own port",
			config.ErrNetConf, o.ListenPort)
	}
	return o, w, nil
}

// Type is the wireguard backend type for the registry.
func Type() backend.Type {
	return backend.Type{
		Name:     Name,
		Validate: backend.Validator(ParseOptions),
		New:      New,
		Settings: newSettings,
	}
}
