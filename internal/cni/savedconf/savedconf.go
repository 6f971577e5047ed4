// Package savedconf stores the delegate configuration the CNI plugin used for
// each container, in flannel's layout: the file dataDir/<containerID> holds
// exactly the JSON bytes given to the delegate's ADD. flannel's plugin reads
// the same file on DEL, so either plugin can delete what the other added.
//
// weft also records the interface name of the attachment in
// dataDir/.ifname/<containerID> (a name no container ID can take, as IDs start
// with a letter or digit), so that GC can release the address of an
// attachment the runtime no longer knows with the right CNI_IFNAME. Files
// flannel wrote have no such record.
//
// Every write is atomic: a temporary file in the same directory is written,
// synced, renamed into place, and the directory is synced.
package savedconf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/weft-net/weft/internal/atomicfile"
)

// ifnameDir is the sub-directory holding interface names.
const ifnameDir = ".ifname"

// ErrCorrupt is wrapped by Decode (and Load) errors for content that is not a
// usable delegate configuration.
var ErrCorrupt = errors.New("saved delegate configuration is corrupt")

// Store is a directory of saved delegate configurations.
type Store struct {
	Dir string
}

// Saved is one saved attachment.
type Saved struct {
	ContainerID string
	// IfName is empty when the file was written by flannel.
	IfName string
	// Conf is the delegate configuration, byte for byte.
	Conf []byte
	// Header is the decoded part of Conf weft needs.
	Header Header
}

// Header is what weft reads from a saved configuration.
type Header struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Type       string `json:"type"`
}

// Decode reads the header of a saved configuration. It fails, wrapping
// ErrCorrupt, unless data is a JSON object whose "type" names a plugin.
func Decode(data []byte) (Header, error) {
	var h Header
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&h); err != nil {
		return Header{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if dec.More() {
		return Header{}, fmt.Errorf("%w: trailing data after the JSON object", ErrCorrupt)
	}
	if h.Type == "" || strings.ContainsAny(h.Type, "/\\\x00") || h.Type == "." || h.Type == ".." {
		return Header{}, fmt.Errorf("%w: %q is not a plugin type", ErrCorrupt, h.Type)
	}
	return h, nil
}

// validID checks the CNI spec's container ID syntax, [a-zA-Z0-9][a-zA-Z0-9_.-]*,
// which also keeps the ID a plain file name.
func validID(id string) error {
	for i, r := range id {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && (i == 0 || r != '_' && r != '.' && r != '-') {
			return fmt.Errorf("%q is not a valid container ID", id)
		}
	}
	if id == "" {
		return errors.New("empty container ID")
	}
	return nil
}

// Save stores conf for containerID (and records ifName), creating the
// directory (0700) when needed. The configuration file is 0600 and in place,
// synced, when Save returns nil.
func (s Store) Save(containerID, ifName string, conf []byte) error {
	if err := validID(containerID); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(s.Dir, ifnameDir), 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	if err := writeAtomic(filepath.Join(s.Dir, ifnameDir), containerID, []byte(ifName)); err != nil {
		return fmt.Errorf("save interface name: %w", err)
	}
	if err := writeAtomic(s.Dir, containerID, conf); err != nil {
		return fmt.Errorf("save delegate configuration: %w", err)
	}
	return nil
}

// Load returns the saved attachment of containerID. A missing file wraps
// fs.ErrNotExist; unusable content wraps ErrCorrupt (Conf is still set).
func (s Store) Load(containerID string) (Saved, error) {
	if err := validID(containerID); err != nil {
		return Saved{}, err
	}
	sv := Saved{ContainerID: containerID}
	path := filepath.Join(s.Dir, containerID)
	conf, err := os.ReadFile(path)
	if err != nil {
		return Saved{}, fmt.Errorf("read saved delegate configuration: %w", err)
	}
	sv.Conf = conf
	if ifn, err := os.ReadFile(filepath.Join(s.Dir, ifnameDir, containerID)); err == nil {
		sv.IfName = strings.TrimSpace(string(ifn))
	}
	if sv.Header, err = Decode(conf); err != nil {
		return sv, fmt.Errorf("%s: %w", path, err)
	}
	return sv, nil
}

// Remove deletes the saved attachment of containerID; a missing one is not
// an error.
func (s Store) Remove(containerID string) error {
	if err := validID(containerID); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(s.Dir, containerID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove saved delegate configuration: %w", err)
	}
	if err := os.Remove(filepath.Join(s.Dir, ifnameDir, containerID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove saved interface name: %w", err)
	}
	syncDir(s.Dir)
	return nil
}

// List returns the container IDs that have a saved configuration, and the
// IDs of interface-name records whose configuration is gone (orphans left by
// a crash between the two writes or removals). A missing directory is empty.
func (s Store) List() (ids, orphans []string, err error) {
	have := map[string]bool{}
	ents, err := os.ReadDir(s.Dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("list data directory: %w", err)
	}
	for _, e := range ents {
		if e.Type().IsRegular() && validID(e.Name()) == nil {
			ids = append(ids, e.Name())
			have[e.Name()] = true
		}
	}
	ents, err = os.ReadDir(filepath.Join(s.Dir, ifnameDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("list interface names: %w", err)
	}
	for _, e := range ents {
		if e.Type().IsRegular() && validID(e.Name()) == nil && !have[e.Name()] {
			orphans = append(orphans, e.Name())
		}
	}
	return ids, orphans, nil
}

// writeAtomic writes data to dir/name with mode 0600 (see
// internal/atomicfile).
func writeAtomic(dir, name string, data []byte) error {
	return atomicfile.Write(filepath.Join(dir, name), data, 0o600)
}

// syncDir makes a rename or removal in dir durable (best effort).
func syncDir(dir string) { atomicfile.SyncDir(dir) }
