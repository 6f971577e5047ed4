//go:build linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetnsDir is where iproute2 keeps named network namespaces.
const NetnsDir = "/run/netns"

// NSPath returns the bind-mount path of the named namespace.
func NSPath(ns string) string { return filepath.Join(NetnsDir, ns) }

// Command returns a command that runs argv inside namespace ns through
// `ip netns exec` (which also gives it the namespace's /sys and
// /etc/netns/<ns> files). The context kills the command, as with
// exec.CommandContext.
func Command(ctx context.Context, ns string, argv ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...)
}

// StartIn starts cmd with its network namespace ns: the child is forked from
// a thread that is in ns, so it inherits it. Unlike Command (`ip netns
// exec`), nothing runs before the program itself and no mount namespace is
// made, so a restart is a few milliseconds faster; the program sees the
// host's /sys (weftd uses netlink, not /sys/class/net).
func StartIn(ns string, cmd *exec.Cmd) error {
	return Do(ns, cmd.Start)
}

// Exec runs argv inside namespace ns and returns its combined output; the
// error carries the output when the command fails.
func Exec(ctx context.Context, ns string, argv ...string) (string, error) {
	out, err := Command(ctx, ns, argv...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("exec %q in %s: %w: %s", strings.Join(argv, " "), ns, err,
			strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Do runs fn on a locked OS thread whose network namespace is ns, then puts
// the thread back into its original namespace. fn must not start goroutines
// that expect to be in ns: only the calling goroutine is. If the original
// namespace cannot be restored the thread stays locked and the Go runtime
// discards it when Do's goroutine exits, so no other goroutine ever runs in ns
// by accident.
func Do(ns string, fn func() error) error {
	target, err := netns.GetFromPath(NSPath(ns))
	if err != nil {
		return fmt.Errorf("open netns %s: %w", ns, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() { errc <- doLocked(target, ns, fn) }()
	return <-errc
}

func doLocked(target netns.NsHandle, ns string, fn func() error) (retErr error) {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", ns, err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			retErr = errors.Join(retErr, fmt.Errorf("restore netns after %s: %w", ns, err))
			return // the thread stays locked and dies with this goroutine
		}
		runtime.UnlockOSThread()
	}()
	return fn()
}

// createNS creates the named namespace with `ip netns add`, which also sets
// up the shared /run/netns mount `ip netns exec` relies on.
func createNS(ctx context.Context, ns string) error {
	out, err := exec.CommandContext(ctx, "ip", "netns", "add", ns).CombinedOutput()
	if err != nil {
		return fmt.Errorf("create netns %s: %w: %s", ns, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// deleteNS unmounts and removes the named namespace; the kernel destroys it,
// and the links in it, once no process holds it. A missing one is success.
func deleteNS(ns string) error {
	p := NSPath(ns)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount netns %s: %w", ns, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove netns %s: %w", ns, err)
	}
	return nil
}

// listNS returns the named namespaces whose name starts with prefix, sorted.
func listNS(prefix string) ([]string, error) {
	ents, err := os.ReadDir(NetnsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", NetnsDir, err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

// nsID identifies a namespace by the device and inode of its nsfs file.
type nsID struct{ dev, ino uint64 }

func statNS(path string) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nsID{}, err
	}
	return nsID{dev: st.Dev, ino: st.Ino}, nil
}

// Processes returns the processes (not this one) in namespace ns.
func Processes(ns string) ([]int, error) {
	id, err := statNS(NSPath(ns))
	if err != nil {
		return nil, fmt.Errorf("namespace %s: %w", ns, err)
	}
	return pidsIn(map[nsID]string{id: ns})
}

// pidsIn returns the processes (not ours) whose network namespace is one of
// ids, found by scanning /proc as `ip netns pids` does.
func pidsIn(ids map[nsID]string) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list /proc: %w", err)
	}
	self := os.Getpid()
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		id, err := statNS(filepath.Join("/proc", e.Name(), "ns", "net"))
		if err != nil {
			continue // gone, a zombie, or a kernel thread
		}
		if _, ok := ids[id]; ok {
			out = append(out, pid)
		}
	}
	return out, nil
}

// setSysctls writes /proc/sys/<key> = value inside ns (net sysctls are per
// namespace; the file opened from a thread in ns is ns's).
func setSysctls(ns string, kv map[string]string) error {
	return Do(ns, func() error {
		keys := make([]string, 0, len(kv))
		for k := range kv {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			p := filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/"))
			if err := os.WriteFile(p, []byte(kv[k]), 0o644); err != nil {
				return fmt.Errorf("set %s=%s in %s: %w", k, kv[k], ns, err)
			}
		}
		return nil
	})
}

// DialContext connects to addr from inside namespace ns. The socket is made
// on a thread in ns and keeps that namespace afterwards, so the connection
// can be used from any goroutine (HTTP transports and gRPC dial from their
// own goroutines, which is why they need this instead of Do).
func DialContext(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := Do(ns, func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s in %s: %w", addr, ns, err)
	}
	return conn, nil
}
