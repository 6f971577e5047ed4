//go:build linux

package kubelet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/weft-net/weft/internal/lab"
)

// globalPaths are host paths a kubelet or containerd writes by default; the
// lab points them all elsewhere, and Leftovers reports any of them that
// appeared.
var globalPaths = []string{"/var/lib/kubelet", "/var/lib/containerd", "/run/containerd", "/etc/kubernetes",
	"/var/run/kubernetes", "/opt/containerd", "/var/log/pods", "/var/log/containers", "/run/flannel",
	"/var/lib/cni", "/opt/cni", "/etc/containerd", "/run/containerd/s"}

// Down stops what Up started (kubelets first, then every process in the
// nodes' cgroups, containerd and its shims, the mount namespaces, the
// scheduler and the control plane, etcd and the namespaces), then Purges.
// It may be called on a lab Up did not finish, and more than once.
func (l *Lab) Down(ctx context.Context) error {
	var errs []error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range l.nodes {
		wg.Go(func() {
			if err := n.stop(); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("node %s: %w", n.name, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	errs = append(errs, l.sched.Stop(3*time.Second))
	if l.cp != nil {
		errs = append(errs, l.cp.Stop())
	}
	if l.cl != nil {
		errs = append(errs, l.cl.Down(ctx))
	}
	errs = append(errs, Purge(ctx, l.log, l.o.Name, l.o.Dir))
	return errors.Join(errs...)
}

// Purge removes lab name whose directory is dir without any state but
// dir/host.json (and dir/kubelet.json when there is one): it kills the
// processes kubelet.json records that still run (kubelets first: a detached
// lab's run until then), every process in the nodes' cgroups and in the
// lab's network namespaces, deletes the namespaces, removes the cgroups, the
// directory (refusing while anything is mounted under it) and the mount
// points the lab created on the host, restores the sysctls saved in
// host.json and releases LockFile when it names the lab. It succeeds when
// nothing is left.
func Purge(ctx context.Context, log *slog.Logger, name, dir string) error {
	if err := lab.ValidateName(name); err != nil {
		return err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Held by this process until the end (released even on error below).
	if err := claim(name, dir); err != nil {
		return fmt.Errorf("kubelet lab lock: %w", err)
	}
	host, err := loadHostState(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return errors.Join(err, unlock(name, dir))
	}
	if host == nil {
		host = &hostState{}
	}
	roots := host.CgroupRoots
	if len(roots) == 0 {
		roots = globCgroupRoots(name)
	}
	var errs []error
	errs = append(errs, killRecorded(dir, 10*time.Second))
	for _, r := range roots {
		errs = append(errs, killCgroup(r, 15*time.Second))
	}
	errs = append(errs, lab.Down(ctx, log, name, ""))
	for _, r := range roots {
		// Again: a container a surviving shim or containerd started after
		// the first pass.
		errs = append(errs, killCgroup(r, 15*time.Second))
		errs = append(errs, removeCgroup(r, 10*time.Second))
	}
	if m := mountsUnder(dir); len(m) > 0 {
		errs = append(errs, fmt.Errorf("not removing %s: mounts under it: %v", dir, m))
	} else if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, removeCreated(host.Created))
	if host.Sysctls != nil {
		restored, err := restoreSysctls(host.Sysctls)
		errs = append(errs, err)
		if len(restored) > 0 {
			log.Info("sysctls restored", "lab", name, "sysctls", restored)
		}
	}
	// Released even when something above failed: the error says what is
	// left, and a lock held by a live process would stall every later lab.
	errs = append(errs, unlock(name, dir))
	return errors.Join(errs...)
}

// globCgroupRoots finds the cgroup roots of lab name's nodes.
func globCgroupRoots(name string) []string {
	mounts, _ := cgroupMounts()
	seen := map[string]bool{}
	var out []string
	for _, m := range mounts {
		ms, _ := filepath.Glob(filepath.Join(m.target, "weft-"+name+"-n*"))
		for _, p := range ms {
			r := "/" + filepath.Base(p)
			if !seen[r] {
				seen[r] = true
				out = append(out, r)
			}
		}
	}
	return out
}

// Leftovers reports what of the lab is still there after Down: namespaces,
// processes (in a node's mount namespace, or with the lab's directory on
// their command line), mounts under the directory, the directory itself,
// cgroups, mount points the lab created, global paths that appeared, and
// sysctls that differ from before.
func (l *Lab) Leftovers() []string {
	var out []string
	if nss, err := lab.Namespaces(l.o.Name); err != nil || len(nss) > 0 {
		out = append(out, fmt.Sprintf("namespaces: %v %v", nss, err))
	}
	mnts := map[uint64]bool{}
	for _, n := range l.nodes {
		if n.mntNS != 0 {
			mnts[n.mntNS] = true
		}
	}
	pids := procsWith(func(pid int) bool {
		if mnts[nsIno("/proc/"+strconv.Itoa(pid)+"/ns/mnt")] {
			return true
		}
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		return strings.Contains(string(b), l.o.Dir)
	})
	if len(pids) > 0 {
		out = append(out, fmt.Sprintf("processes: %v", pids))
	}
	if m := mountsUnder(l.o.Dir); len(m) > 0 {
		out = append(out, fmt.Sprintf("mounts: %v", m))
	}
	if _, err := os.Stat(l.o.Dir); err == nil {
		out = append(out, "directory "+l.o.Dir+" exists")
	}
	if lockedBy(l.o.Name, l.o.Dir) {
		out = append(out, "lock "+LockFile+" still names the lab")
	}
	if r := globCgroupRoots(l.o.Name); len(r) > 0 {
		out = append(out, fmt.Sprintf("cgroups: %v", r))
	}
	if l.host != nil {
		for _, c := range l.host.Created {
			if _, err := os.Lstat(c); err == nil {
				out = append(out, "created mount point "+c+" exists")
			}
		}
		for _, p := range l.host.Absent {
			if _, err := os.Lstat(p); err == nil {
				out = append(out, "global path "+p+" appeared")
			}
		}
		for _, e := range netnsEntries() {
			if !slices.Contains(l.host.Netns, e) && !strings.HasPrefix(e, l.o.Name+"-") && strings.HasPrefix(e, "cni-") {
				out = append(out, "/run/netns/"+e+" appeared")
			}
		}
		if d := sysctlDiff(l.host.Sysctls); len(d) > 0 {
			out = append(out, fmt.Sprintf("sysctls changed: %v", d))
		}
	}
	return out
}

// netnsEntries lists /run/netns.
func netnsEntries() []string {
	ents, _ := os.ReadDir(lab.NetnsDir)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}
