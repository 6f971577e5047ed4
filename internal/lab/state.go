//go:build linux

package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/weft-net/weft/internal/atomicfile"
)

// StateVersion is the version of the state file format.
const StateVersion = 1

// stateFile is the JSON of "<dir>/<lab>.json": the topology plus a version.
type stateFile struct {
	Version int `json:"version"`
	Topology
}

func statePath(dir, name string) string { return filepath.Join(dir, name+".json") }

// StatePath returns where a lab's state file lives in dir.
func StatePath(dir, name string) string { return statePath(dir, name) }

// writeState writes t to its state file atomically (temporary file, fsync,
// rename), mode 0644, creating dir if needed.
func writeState(dir string, t *Topology) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	data, err := json.MarshalIndent(stateFile{Version: StateVersion, Topology: *t}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state of lab %s: %w", t.Name, err)
	}
	if err := atomicfile.Write(statePath(dir, t.Name), append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write state of lab %s: %w", t.Name, err)
	}
	return nil
}

// LoadState reads the state file of lab name from dir. A missing file wraps
// ErrNotFound.
func LoadState(dir, name string) (*Topology, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(statePath(dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("state of lab %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read state of lab %s: %w", name, err)
	}
	var s stateFile
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("decode state of lab %s: %w", name, err)
	}
	if s.Version != StateVersion {
		return nil, fmt.Errorf("state of lab %s: version %d, want %d", name, s.Version, StateVersion)
	}
	if s.Name != name {
		return nil, fmt.Errorf("state of lab %s: file names lab %q", name, s.Name)
	}
	return &s.Topology, nil
}

// Load returns the lab another process built, from its state file in dir,
// so that `weft lab exec` and the like can add pods or run commands. It does
// not check the kernel; Namespaces does.
func Load(log *slog.Logger, dir, name string) (*Lab, error) {
	t, err := LoadState(dir, name)
	if err != nil {
		return nil, err
	}
	return &Lab{log: logger(log).With("component", "lab", "lab", name), stateDir: dir, topo: *t}, nil
}
