// Package atomicfile writes files so that a reader sees either the old
// content or the whole new one, never a half-written file, and the new one
// survives a crash once Write returns: a temporary file in the same
// directory is written, given its mode, synced and renamed over the target,
// and the directory is synced. subnet.env, the CNI plugin's saved delegate
// configurations and the lab's state file are written this way.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// Write stores data at path with mode perm. The directory must exist.
func Write(path string, data []byte, perm os.FileMode) (retErr error) {
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("create temporary file for %s: %w", name, err)
	}
	defer func() {
		if retErr != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("chmod %s: %w", f.Name(), err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", f.Name(), err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("rename %s into place: %w", name, err)
	}
	SyncDir(dir)
	return nil
}

// SyncDir makes a rename or removal in dir durable; best effort, since the
// change is already visible to readers.
func SyncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}
