//go:build linux

package kubelet

// One kubelet lab at a time. A lab changes host-global things that two labs
// would trip over: the mount points hostBinds need (/run/flannel, /opt/cni,
// /var/lib/cni, /run/containerd, /var/log/pods, /var/log/containers,
// /var/lib/kubelet: the first lab creates and its Down removes them, under
// the other lab's mount namespaces) and the sysctls kubelet writes (the second
// lab would save the first one's values as the host's and "restore" them).
// So Up takes a lock, LockFile, naming the lab, and Purge (so Down too)
// releases it.
//
// The lock file is written whole under an flock of its directory, so that
// checking it and taking it over are one step. A lock is held while the
// process that took it lives (its pid with the same start time), or while
// the lab it names is there (its directory and its namespaces: a lab may
// outlive the process that made it). Otherwise it is stale, and taken over.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/internal/atomicfile"
	"github.com/weft-net/weft/internal/lab"
)

// LockDir holds LockFile; it is removed with the lock when empty. (Variables
// for the unit test.)
var LockDir = "/run/weft-lab"

// LockFile is the kubelet lab's lock.
var LockFile = filepath.Join(LockDir, "kubelet.lock")

// LabLock is what LockFile says.
type LabLock struct {
	Name  string    `json:"name"`
	Dir   string    `json:"dir"`
	PID   int       `json:"pid"`
	Start uint64    `json:"start"` // the pid's start time, in clock ticks after boot
	Since time.Time `json:"since"`
}

// ErrLabRunning is returned (wrapped) by Up when another kubelet lab holds the
// lock.
var ErrLabRunning = errors.New("another kubelet lab is up")

func (k *LabLock) String() string {
	alive := "running"
	if !pidAlive(k.PID, k.Start) {
		alive = "gone"
	}
	return fmt.Sprintf("lab %s (dir %s, taken by pid %d, %s, at %s)", k.Name, k.Dir, k.PID, alive,
		k.Since.Format(time.RFC3339))
}

// held reports whether the lock still protects a lab.
func (k *LabLock) held() bool {
	if pidAlive(k.PID, k.Start) {
		return true
	}
	if _, err := os.Stat(k.Dir); err != nil {
		return false
	}
	nss, err := lab.Namespaces(k.Name)
	return err != nil || len(nss) > 0
}

// pidStart returns a process's start time (field 22 of /proc/<pid>/stat).
func pidStart(pid int) (uint64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command (field 2) is in parentheses and may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:]) // from field 3 on
	if len(f) < 20 {
		return 0, false
	}
	v, err := strconv.ParseUint(f[19], 10, 64)
	return v, err == nil
}

// pidAlive reports whether pid is the process that started at start and
// has not exited (a zombie its parent has not reaped yet is gone).
func pidAlive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	s, ok := pidStart(pid)
	return ok && s == start && !zombie(pid)
}

// zombie reports whether pid has exited and waits to be reaped (state Z,
// field 3 of /proc/<pid>/stat).
func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && strings.HasPrefix(s[i+1:], " Z")
}

// withLockDir runs f with LockDir flocked (it creates the directory when
// missing, and retries when a releaser removed it in between).
func withLockDir(f func() error) error {
	for range 50 {
		if err := os.MkdirAll(LockDir, 0o755); err != nil {
			return err
		}
		fd, err := unix.Open(LockDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return fmt.Errorf("open %s: %w", LockDir, err)
		}
		if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
			unix.Close(fd)
			return fmt.Errorf("flock %s: %w", LockDir, err)
		}
		var a, b unix.Stat_t
		same := unix.Fstat(fd, &a) == nil && unix.Stat(LockDir, &b) == nil && a.Dev == b.Dev && a.Ino == b.Ino
		if !same { // removed (and maybe made again) while we waited
			unix.Close(fd)
			continue
		}
		err = f()
		unix.Close(fd) // releases the flock
		return err
	}
	return fmt.Errorf("%s keeps disappearing", LockDir)
}

func readLock() (*LabLock, error) {
	b, err := os.ReadFile(LockFile)
	if err != nil {
		return nil, err
	}
	var k LabLock
	if err := json.Unmarshal(b, &k); err != nil {
		// Written whole (atomicfile) under the flock: garbage is not ours.
		return nil, fmt.Errorf("%s: %w", LockFile, err)
	}
	return &k, nil
}

// tryLock takes the lock for lab name in dir, or returns the lock that holds
// it. A stale lock is taken over (and logged by the caller through the
// returned previous lock).
func tryLock(name, dir string) (holder, stale *LabLock, err error) {
	err = withLockDir(func() error {
		k, err := readLock()
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return err
		case k.held():
			holder = k
			return nil
		default:
			stale = k
		}
		start, ok := pidStart(os.Getpid())
		if !ok {
			return errors.New("cannot read this process's start time")
		}
		b, _ := json.MarshalIndent(LabLock{Name: name, Dir: dir, PID: os.Getpid(), Start: start, Since: time.Now()}, "", "  ")
		return atomicfile.Write(LockFile, append(b, '\n'), 0o644)
	})
	return holder, stale, err
}

// claim makes this process the lock's holder when the lock names lab name
// in dir, so that it stays held while Purge removes the lab: the lock of a
// detached lab whose `weft lab up` exited is held only by the lab's
// directory and namespaces, and Purge deletes the namespaces before it puts
// the host's sysctls and mount points back, which another lab waiting for
// the lock must not see half done.
func claim(name, dir string) error {
	return withOwnLock(name, dir, func(k *LabLock) error {
		if k.PID == os.Getpid() {
			return nil
		}
		start, ok := pidStart(os.Getpid())
		if !ok {
			return errors.New("cannot read this process's start time")
		}
		k.PID, k.Start = os.Getpid(), start
		b, _ := json.MarshalIndent(k, "", "  ")
		return atomicfile.Write(LockFile, append(b, '\n'), 0o644)
	})
}

// unlock releases the lock when it names lab name in dir, and removes
// LockDir when nothing else is in it.
func unlock(name, dir string) error {
	return withOwnLock(name, dir, func(*LabLock) error {
		if err := os.Remove(LockFile); err != nil {
			return err
		}
		if err := unix.Rmdir(LockDir); err != nil && !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("remove %s: %w", LockDir, err)
		}
		return nil
	})
}

// withOwnLock calls f under LockDir's flock with the lock, when there is one
// and it names lab name in dir; another lab's lock, or none, is left alone.
func withOwnLock(name, dir string, f func(*LabLock) error) error {
	if _, err := os.Stat(LockFile); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return withLockDir(func() error {
		k, err := readLock()
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if k.Name != name || k.Dir != dir {
			return nil // another lab's
		}
		return f(k)
	})
}

// lockedBy returns the lock when it names lab name in dir (for Leftovers).
func lockedBy(name, dir string) bool {
	k, err := readLock()
	return err == nil && k.Name == name && k.Dir == dir
}

// CurrentLock returns the lock of the kubelet lab that is up, or nil.
func CurrentLock() (*LabLock, error) {
	k, err := readLock()
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil || !k.held() {
		return nil, err
	}
	return k, nil
}
