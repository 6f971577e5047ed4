//go:build linux

package kubelet

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestLock checks the kubelet lab lock in a temporary directory: taken,
// refused to a second lab while its process lives, released only by its own
// lab (and its directory removed), and a stale lock (process and lab gone)
// taken over.
func TestLock(t *testing.T) {
	oldDir, oldFile := LockDir, LockFile
	t.Cleanup(func() { LockDir, LockFile = oldDir, oldFile })
	LockDir = filepath.Join(t.TempDir(), "weft-lab")
	LockFile = filepath.Join(LockDir, "kubelet.lock")
	dirA, dirB := t.TempDir(), t.TempDir()

	holder, stale, err := tryLock("labA", dirA)
	if err != nil || holder != nil || stale != nil {
		t.Fatalf("first lock: holder %v stale %v err %v", holder, stale, err)
	}
	if k, err := CurrentLock(); err != nil || k == nil || k.Name != "labA" {
		t.Fatalf("CurrentLock = %v, %v; want labA", k, err)
	}
	holder, _, err = tryLock("labB", dirB)
	if err != nil || holder == nil || holder.Name != "labA" || holder.Dir != dirA {
		t.Fatalf("second lock: holder %v err %v; want labA's", holder, err)
	}
	if err := unlock("labB", dirB); err != nil || !lockedBy("labA", dirA) {
		t.Fatalf("unlock by another lab released the lock (err %v)", err)
	}
	if err := unlock("labA", dirA); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(LockDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left after unlock: %v", LockDir, err)
	}

	// A lock of a process that is gone, naming a lab whose directory is gone.
	if _, _, err := tryLock("labA", filepath.Join(dirA, "gone")); err != nil {
		t.Fatal(err)
	}
	k, err := readLock()
	if err != nil {
		t.Fatal(err)
	}
	k.Start++ // another process with our pid: ours is not it
	if k.held() {
		t.Fatalf("lock of a dead process naming a missing directory is held: %v", k)
	}
	b := []byte(`{"name":"labA","dir":"` + k.Dir + `","pid":1,"start":18446744073709551615}`)
	if err := os.WriteFile(LockFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	holder, stale, err = tryLock("labB", dirB)
	if err != nil || holder != nil || stale == nil || stale.Name != "labA" {
		t.Fatalf("stale lock: holder %v stale %v err %v; want it taken over", holder, stale, err)
	}
	if !lockedBy("labB", dirB) {
		t.Fatal("lock does not name labB after the takeover")
	}
	if err := unlock("labB", dirB); err != nil {
		t.Fatal(err)
	}

	// A detached lab's lock (its `weft lab up` gone): whoever purges it
	// claims it first, so it stays held while the lab is taken apart;
	// claiming another lab's lock changes nothing.
	b = []byte(`{"name":"labA","dir":"` + dirA + `","pid":1,"start":18446744073709551615}`)
	if err := os.MkdirAll(LockDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(LockFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := claim("labB", dirB); err != nil {
		t.Fatal(err)
	}
	if k, err := readLock(); err != nil || k.PID != 1 {
		t.Fatalf("claim by another lab changed the lock: %v %v", k, err)
	}
	if err := claim("labA", dirA); err != nil {
		t.Fatal(err)
	}
	if k, err := readLock(); err != nil || k.PID != os.Getpid() || !k.held() || k.Name != "labA" {
		t.Fatalf("claimed lock = %v, %v; want labA held by this process", k, err)
	}
	if holder, _, err := tryLock("labB", dirB); err != nil || holder == nil {
		t.Fatalf("a claimed lock was taken over: holder %v err %v", holder, err)
	}
	if err := unlock("labA", dirA); err != nil {
		t.Fatal(err)
	}
}
