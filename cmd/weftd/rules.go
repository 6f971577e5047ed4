package main

import (
	"log/slog"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/daemon"
)

// newRules returns the masquerade and forward rule manager's constructor, or
// nil when no rule is asked for.
func newRules(log *slog.Logger, o *config.Options) func(*config.NetConf) (daemon.Rules, error) {
	_ = log
	_ = o
	return nil
}
