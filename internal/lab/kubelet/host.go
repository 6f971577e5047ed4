//go:build linux

package kubelet

// What the lab touches outside its directory and namespaces, and how it is
// put back: global sysctls (kubelet writes some at start), mount points that
// must exist on the host for a node's mount namespace to bind its own
// directories over them, and cgroups (one root per node, where kubelet makes
// kubepods/...). hostState is saved to <Dir>/host.json before anything is
// changed, so Purge puts it back even after the process that built the lab
// died.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/internal/atomicfile"
)

// hostState is <Dir>/host.json.
type hostState struct {
	// Sysctls are the writable kernel, vm, fs and user sysctls (not net:
	// those are per network namespace) as they were before the lab.
	Sysctls map[string]string `json:"sysctls"`
	// Created are the host directories the lab created as mount points
	// (the topmost missing one of each path), removed by Purge.
	Created []string `json:"created"`
	// CgroupRoots are the nodes' cgroup roots ("/weft-<lab>-n1").
	CgroupRoots []string `json:"cgroupRoots"`
	// Absent are the globalPaths that did not exist before the lab.
	Absent []string `json:"absent"`
	// Netns are the entries of /run/netns before the lab.
	Netns []string `json:"netns"`
}

const hostStateFile = "host.json"

func loadHostState(dir string) (*hostState, error) { return loadJSON[hostState](dir, hostStateFile) }

// loadJSON reads dir/file into a T.
func loadJSON[T any](dir, file string) (*T, error) {
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return nil, err
	}
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("decode %s: %w", file, err)
	}
	return &v, nil
}

func (h *hostState) save(dir string) error {
	b, _ := json.MarshalIndent(h, "", "  ")
	return atomicfile.Write(filepath.Join(dir, hostStateFile), append(b, '\n'), 0o600)
}

// KubeletSysctls are the global sysctls kubelet sets at start
// (setupKernelTunables); every other writable sysctl is saved and compared
// as well.
var KubeletSysctls = []string{"vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
	"kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes"}

// volatileSysctl reports sysctls that change by themselves or must not be
// written back (writing them acts, rather than sets).
func volatileSysctl(k string) bool {
	for _, p := range []string{"kernel.random.", "fs.quota.", "kernel.ns_last_pid", "kernel.pty.nr", "fs.dentry-state",
		"fs.file-nr", "fs.inode-nr", "fs.inode-state", "fs.aio-nr", "vm.drop_caches", "vm.compact_memory",
		"kernel.perf_event_max_sample_rate", "kernel.tainted", "vm.stat_refresh", "kernel.sysrq",
		"fs.binfmt_misc.", "vm.nr_hugepages", "kernel.hung_task_detect_count", "user."} {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

// readSysctls reads every writable sysctl under kernel, vm and fs.
func readSysctls() map[string]string {
	out := map[string]string{}
	for _, top := range []string{"kernel", "vm", "fs"} {
		_ = filepath.WalkDir(filepath.Join("/proc/sys", top), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			key := strings.ReplaceAll(strings.TrimPrefix(p, "/proc/sys/"), "/", ".")
			if volatileSysctl(key) {
				return nil
			}
			info, err := d.Info()
			if err != nil || info.Mode().Perm()&0o200 == 0 || info.Mode().Perm()&0o444 == 0 {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			out[key] = strings.TrimSpace(string(b))
			return nil
		})
	}
	return out
}

// restoreSysctls writes back every saved sysctl whose value differs now and
// returns what it restored ("key: now -> saved").
func restoreSysctls(saved map[string]string) ([]string, error) {
	now := readSysctls()
	var restored []string
	var errs []error
	keys := make([]string, 0, len(saved))
	for k := range saved {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v, ok := now[k]
		if !ok || v == saved[k] {
			continue
		}
		p := filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/"))
		if err := os.WriteFile(p, []byte(saved[k]), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore %s=%s: %w", k, saved[k], err))
			continue
		}
		restored = append(restored, fmt.Sprintf("%s: %s -> %s", k, v, saved[k]))
	}
	return restored, errors.Join(errs...)
}

// sysctlDiff lists the saved sysctls whose value differs now.
func sysctlDiff(saved map[string]string) []string {
	now := readSysctls()
	var out []string
	for k, v := range saved {
		if n, ok := now[k]; ok && n != v {
			out = append(out, fmt.Sprintf("%s=%s (was %s)", k, n, v))
		}
	}
	slices.Sort(out)
	return out
}

// ensureDir creates path when it is missing and returns the topmost
// directory it created ("" when path existed).
func ensureDir(path string) (string, error) {
	top := ""
	for p := path; p != "/"; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); err == nil {
			break
		}
		top = p
	}
	if top == "" {
		return "", nil
	}
	if err := os.MkdirAll(path, 0o755); err != nil {
		return "", fmt.Errorf("create mount point %s: %w", path, err)
	}
	return top, nil
}

// removeCreated removes the directories ensureDir created, deepest first,
// only when empty (rmdir, never recursively).
func removeCreated(created []string) error {
	var errs []error
	// A created top may contain another created path's parents: remove
	// each tree bottom-up, directory by directory, all of them ours.
	for _, top := range slices.Backward(created) {
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for _, d := range slices.Backward(dirs) {
			if err := unix.Rmdir(d); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("remove %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}

// cgroupMounts returns the cgroup hierarchies (v1 and v2) mounted in this
// mount namespace.
func cgroupMounts() ([]mountEntry, error) {
	mi, err := mountInfo()
	if err != nil {
		return nil, err
	}
	var out []mountEntry
	for _, m := range mi {
		if m.fstype == "cgroup" || m.fstype == "cgroup2" {
			out = append(out, m)
		}
	}
	return out, nil
}

// makeCgroupRoot creates root in every cgroup v1 hierarchy (kubelet refuses
// a cgroupRoot that does not exist); cpuset gets its parent's cpus and mems.
func makeCgroupRoot(root string) error {
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	for _, m := range mounts {
		if m.fstype != "cgroup" {
			continue
		}
		d := filepath.Join(m.target, root)
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create cgroup %s: %w", d, err)
		}
		if _, err := os.Stat(filepath.Join(m.target, "cpuset.cpus")); err == nil {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				b, err := os.ReadFile(filepath.Join(m.target, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(d, f), b, 0o644); err != nil {
					return fmt.Errorf("set %s of %s: %w", f, d, err)
				}
			}
		}
	}
	return nil
}

// cgroupDirs returns every directory of root's subtree in every hierarchy,
// parents before children.
func cgroupDirs(root string) []string {
	mounts, _ := cgroupMounts()
	var out []string
	for _, m := range mounts {
		_ = filepath.WalkDir(filepath.Join(m.target, root), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				out = append(out, p)
			}
			return nil
		})
	}
	return out
}

// killCgroup SIGKILLs every process in root's subtree, in every hierarchy,
// until none is left (or timeout).
func killCgroup(root string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var pids []int
		for _, d := range cgroupDirs(root) {
			b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
					pids = append(pids, pid)
				}
			}
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s: processes %v left after %v", root, pids, timeout)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeCgroup removes root's subtree in every hierarchy, children first,
// retrying while the kernel still releases killed tasks.
func removeCgroup(root string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		dirs := cgroupDirs(root)
		var errs []error
		for _, d := range slices.Backward(dirs) {
			if err := unix.Rmdir(d); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
			}
		}
		if len(errs) == 0 || time.Now().After(deadline) {
			return errors.Join(errs...)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	target, fstype string
}

func mountInfo() ([]mountEntry, error) {
	return mountInfoOf("/proc/self/mountinfo")
}

func mountInfoOf(path string) ([]mountEntry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []mountEntry
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		i := slices.Index(f, "-")
		if len(f) < 5 || i < 0 || i+1 >= len(f) {
			continue
		}
		out = append(out, mountEntry{target: unescapeMount(f[4]), fstype: f[i+1]})
	}
	return out, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountsUnder lists the mount points at or under dir in this mount namespace.
func mountsUnder(dir string) []string {
	mi, _ := mountInfo()
	var out []string
	for _, m := range mi {
		if m.target == dir || strings.HasPrefix(m.target, dir+"/") {
			out = append(out, m.target)
		}
	}
	return out
}

// nsIno returns the inode of a namespace file (/proc/<pid>/ns/mnt).
func nsIno(path string) uint64 {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0
	}
	return st.Ino
}

// procsWith returns the processes for which match(pid) holds.
func procsWith(match func(pid int) bool) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if match(pid) {
			out = append(out, pid)
		}
	}
	return out
}
