//go:build linux

package ipip

import (
	"flag"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/backend/tunnel"
	"github.com/weft-net/weft/internal/config"
)

// Settings are the ipip type's node settings, weftd flags (Type.Settings).
type Settings struct {
	// Path chooses the data path (--ipip-path; see the package
	// documentation).
	Path backend.Path
	// Tuning turns steps of the userspace data path off, for measurements
	// (--ipip-tuning, tunnel.Options.Set); weftd runs with all of them.
	Tuning tunnel.Options
}

// NewSettings returns the defaults.
func NewSettings() *Settings { return &Settings{Path: backend.PathAuto} }

// AddFlags implements config.FlagAdder.
func (s *Settings) AddFlags(fs *flag.FlagSet) {
	fs.Var(&s.Path, "ipip-path",
		"ipip data path: auto (an existing device's kind, else the kernel's ipip device, else userspace), kernel or userspace")
	fs.Var(&s.Tuning, "ipip-tuning",
		"turn steps of the userspace ipip data path off, for measurements only: queues=N,batch=N,novnet,nogso,nogro,nomerge")
}

func newSettings() config.FlagAdder { return NewSettings() }
