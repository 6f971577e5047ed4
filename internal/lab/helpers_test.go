//go:build linux

package lab_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/weft-net/weft/internal/lab"
	"golang.org/x/sys/unix"
)

// rootWatch proves that the root namespace's link list does not change: it
// keeps the `ip -o link` list from the start and a netlink subscription that
// sees even a link that exists only for an instant.
type rootWatch struct {
	before []string
	done   chan struct{}

	mu      sync.Mutex
	created []string // links that appeared in the root namespace
	errs    []error  // subscription errors: events may have been missed
	stopped bool     // the test ended; later errors are the shutdown's
}

func watchRoot(t *testing.T) *rootWatch {
	t.Helper()
	w := &rootWatch{before: rootLinks(t), done: make(chan struct{})}
	ch := make(chan netlink.LinkUpdate, 64)
	err := netlink.LinkSubscribeWithOptions(ch, w.done, netlink.LinkSubscribeOptions{
		ErrorCallback: func(err error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			if !w.stopped {
				w.errs = append(w.errs, err)
			}
		},
	})
	if err != nil {
		t.Fatalf("subscribe to root links: %v", err)
	}
	go func() {
		for u := range ch {
			if u.Header.Type == unix.RTM_NEWLINK && !slices.ContainsFunc(w.before, func(s string) bool {
				return strings.HasPrefix(s, fmt.Sprintf("%d: ", u.Attrs().Index))
			}) {
				w.mu.Lock()
				w.created = append(w.created, u.Attrs().Name)
				w.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		w.mu.Lock()
		w.stopped = true
		w.mu.Unlock()
		close(w.done)
	})
	return w
}

// check fails the test when the root link list differs from the start or a
// link was ever created in the root namespace.
func (w *rootWatch) check(t *testing.T, when string) {
	t.Helper()
	if now := rootLinks(t); !slices.Equal(now, w.before) {
		t.Errorf("%s: root links changed:\nbefore %q\nnow    %q", when, w.before, now)
	}
	time.Sleep(50 * time.Millisecond) // let the subscription catch up
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.created) > 0 {
		t.Errorf("%s: links created in the root namespace: %q", when, w.created)
	}
	if len(w.errs) > 0 {
		t.Errorf("%s: root link subscription failed, events may be missed: %v", when, w.errs)
	}
}

// rootLinks returns "index: name" of every link in the root namespace, from
// `ip -o link`.
func rootLinks(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link").Output()
	if err != nil {
		t.Fatalf("ip -o link: %v", err)
	}
	var links []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 {
			links = append(links, f[0]+" "+strings.TrimSuffix(f[1], ":"))
		}
	}
	return links
}

// labNetns returns the lines of `ip netns list` that belong to lab name.
func labNetns(t *testing.T, name string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	var nss []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], name+"-") {
			nss = append(nss, f[0])
		}
	}
	return nss
}

// mustPing pings dst from ns and fails the test when no reply comes.
func mustPing(t *testing.T, ns string, dst netip.Addr) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := lab.Ping(ctx, ns, dst); err != nil {
		t.Errorf("ping: %v", err)
	}
}

// threadNetns returns the net namespace of every thread of this process.
func threadNetns(t *testing.T) map[string]int {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, task := range tasks {
		l, err := os.Readlink(filepath.Join("/proc/self/task", task.Name(), "ns", "net"))
		if err == nil {
			out[l]++
		}
	}
	return out
}

// gone reports whether process pid has exited (or is a zombie).
func gone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}

func sameKeys(a, b map[string]int) bool {
	for k := range a {
		if _, ok := b[k]; !ok {
			return false
		}
	}
	return len(a) == len(b)
}
