//go:build linux

package hack

import (
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/testenv"
)

// hack/lib/apt.sh waits for another apt that holds the dpkg lock instead of
// failing (a CI machine's own unattended upgrade), and fails at once when
// told not to wait. hostname is an essential package, always installed, so
// apt-get install has nothing to do but take the lock.
func TestAptWaitsForTheLock(t *testing.T) {
	testenv.Privileged(t, "takes the dpkg lock", "apt-get")
	const lockFile = "/var/lib/dpkg/lock-frontend"
	f, err := os.OpenFile(lockFile, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lock := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0}
	// Another apt may hold it right now: wait for it, as apt would.
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLKW, &lock); err != nil {
		t.Fatalf("lock %s: %v", lockFile, err)
	}
	var once sync.Once
	unlock := func() {
		once.Do(func() {
			unlockT := syscall.Flock_t{Type: syscall.F_UNLCK, Whence: 0}
			_ = syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &unlockT)
		})
	}
	defer unlock()
	install := func(timeout string) (string, time.Duration, error) {
		cmd := exec.Command("bash", "-c", "source lib/apt.sh && apt_install hostname")
		cmd.Env = append(os.Environ(), "APT_LOCK_TIMEOUT="+timeout)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		return string(out), time.Since(start), err
	}
	if out, _, err := install("0"); err == nil || !strings.Contains(out, "lock") {
		t.Fatalf("apt_install with the lock held and no wait: %v\n%s\nwant a failure naming the lock", err, out)
	}
	const hold = 3 * time.Second
	time.AfterFunc(hold, unlock)
	out, took, err := install("120")
	if err != nil {
		t.Fatalf("apt_install with the lock held for %v: %v after %v\n%s", hold, err, took, out)
	}
	if took < hold-500*time.Millisecond {
		t.Errorf("apt_install took %v with the lock held for %v: it did not wait for it", took, hold)
	}
}
