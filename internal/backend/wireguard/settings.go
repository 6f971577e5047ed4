//go:build linux

package wireguard

import (
	"errors"
	"flag"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/config"
)

// Settings are the wireguard type's node settings, weftd flags
// (Type.Settings). The private key's file is flannel's WIREGUARD_KEY_FILE
// (config.Options.WireGuardKeyFile).
type Settings struct {
	// Path chooses the data path (--wireguard-path; see the package
	// documentation).
	Path backend.Path
	// SocketDir is where the userspace device's control socket goes
	// (--wireguard-socket-dir), for wg(8).
	SocketDir string
}

// NewSettings returns the defaults.
func NewSettings() *Settings { return &Settings{Path: backend.PathAuto, SocketDir: DefaultSocketDir} }

// AddFlags implements config.FlagAdder.
func (s *Settings) AddFlags(fs *flag.FlagSet) {
	fs.Var(&s.Path, "wireguard-path",
		"wireguard data path: auto (an existing device's kind, else the kernel's wireguard device, else userspace), kernel or userspace")
	fs.Var(dirValue{&s.SocketDir}, "wireguard-socket-dir",
		"directory of the userspace wireguard device's control socket (<device>.sock), where wg looks")
}

func newSettings() config.FlagAdder { return NewSettings() }

var errEmptyDir = errors.New("want a directory, not an empty path")

// dirValue is a non-empty path flag.
type dirValue struct{ p *string }

func (v dirValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}

func (v dirValue) Set(s string) error {
	if s == "" {
		return errEmptyDir
	}
	*v.p = s
	return nil
}
