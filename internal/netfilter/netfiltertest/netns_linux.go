package netfiltertest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/weft-net/weft/internal/testenv"

	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/internal/netfilter"
)

// NSPrefix starts the name of every namespace these helpers create.
const NSPrefix = "weftnf-"

// RequireRoot skips t with a clear message unless it runs as root with the
// given binaries installed, and under -short (which means plain tests only).
func RequireRoot(t testing.TB, binaries ...string) {
	t.Helper()
	testenv.Privileged(t, "creates network namespaces and writes netfilter rules", append([]string{"ip"}, binaries...)...)
}

// NewNS creates a network namespace with a unique name (NSPrefix + random
// hex), brings its loopback up and deletes it in t.Cleanup, also when the
// test fails. It never touches the caller's namespace.
func NewNS(t testing.TB) string {
	t.Helper()
	return testenv.Namespace(t, NSPrefix)
}

// Runner returns a netfilter.Runner that runs every command inside ns.
func Runner(ns string) netfilter.ExecRunner {
	return netfilter.ExecRunner{Prefix: []string{"ip", "netns", "exec", ns}}
}

// MustRun runs a command (in the test's own namespace unless it is an
// `ip -n`/`ip netns exec` command) and fails t when it fails.
func MustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// InNS runs fn on an OS thread switched into network namespace ns. Sockets
// fn creates belong to ns and may be used from any goroutine afterwards.
// The thread is switched back before it is released; if that fails the
// thread is left locked, so the runtime discards it.
func InNS(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open own netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open netns %s: %w", ns, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("leave netns %s: %w (after %v)", ns, err, ferr)
			return // thread stays locked and dies with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
