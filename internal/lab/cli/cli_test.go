//go:build linux

package cli

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/testenv"

	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/testbin"
)

// bin returns a directory with weft, weftd and cni/.
func bin(t *testing.T) string {
	t.Helper()
	d, err := testbin.Dir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

type labRunner struct {
	t    *testing.T
	weft string
	root string
}

// cmd runs `weft lab <sub> --state-root <root> <rest...>`.
func (r labRunner) cmd(args ...string) *exec.Cmd {
	full := append([]string{args[0], args[1], "--state-root", r.root}, args[2:]...)
	return exec.Command(r.weft, full...)
}

func (r labRunner) run(args ...string) (string, error) {
	var out bytes.Buffer
	c := r.cmd(args...)
	c.Stdout, c.Stderr = &out, &out
	err := c.Run()
	return out.String(), err
}

// leftovers lists what a lab left: namespaces and processes.
func leftovers(t *testing.T, name, root string) []string {
	ns, err := lab.Namespaces(name)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("pgrep", "-af", filepath.Join(root, name)+"/").Output()
	procs := strings.Fields(strings.TrimSpace(string(out)))
	if len(procs) > 0 {
		ns = append(ns, "processes: "+string(out))
	}
	return ns
}

// isProcs says whether an entry of leftovers lists processes.
func isProcs(entry string) bool { return strings.HasPrefix(entry, "processes: ") }

func TestLabUpStatusDownTwoLabs(t *testing.T) {
	testenv.EndToEnd(t, "builds labs of network namespaces")
	r := labRunner{t: t, weft: filepath.Join(bin(t), "weft"), root: t.TempDir()}
	names := []string{randLab(t), randLab(t), randLab(t)}
	backends := []string{"vxlan", "host-gw", "udp"}
	decoy := names[0] + "x-keep"
	if out, err := exec.Command("ip", "netns", "add", decoy).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v %s", decoy, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", decoy).Run() })
	t.Cleanup(func() {
		for _, n := range names {
			_, _ = r.run("lab", "down", "--name", n)
		}
	})
	var wg sync.WaitGroup
	outs := make([]string, len(names))
	errs := make([]error, len(names))
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], errs[i] = r.run("lab", "up", "--name", n, "--nodes", "2", "--pods", "1", "--backend="+backends[i])
		}()
	}
	wg.Wait()
	for i := range names {
		if errs[i] != nil || !strings.Contains(outs[i], "all 2 pod-to-pod pings answered") {
			t.Fatalf("lab up %s: %v\n%s", names[i], errs[i], outs[i])
		}
		for _, w := range []string{"NODE  PUBLIC IP", "n1    192.168.100.11", "ping (ms)", "starting weftd on node 2"} {
			if !strings.Contains(outs[i], w) {
				t.Errorf("lab up %s output lacks %q:\n%s", names[i], w, outs[i])
			}
		}
	}
	// The BACKEND column is what each node published in its lease.
	for i, n := range names {
		out, err := r.run("lab", "status", "--name", n)
		if err != nil || strings.Count(out, "200 ready") != 2 {
			t.Errorf("lab status %s: %v\n%s", n, err, out)
		}
		// The KERNEL column is weft status on each node: in sync.
		if got := regexp.MustCompile(`(?m)^n\d\s+200 ready\s+in sync\s`).FindAllString(out, -1); len(got) != 2 {
			t.Errorf("lab status %s: weft status is not \"in sync\" on both nodes\n%s", n, out)
		}
		if got := regexp.MustCompile(`(?m)^n1 .*/24 \(mtu \d+\)\s+(\S+)`).FindStringSubmatch(out); got == nil || got[1] != backends[i] {
			t.Errorf("lab status of a %s lab: BACKEND column %q\n%s", backends[i], got, out)
		}
	}
	out, err := r.run("lab", "exec", "--name", names[1], "n1", "--", "ip", "route", "show", "proto", "87")
	if err != nil || !strings.Contains(out, "via 192.168.100.12 dev eth0") {
		t.Errorf("lab exec: %v\n%s", err, out)
	}
	checkExec(t, r, names[0], outs[0])
	if out, err := r.run("lab", "up", "--name", names[0]); err == nil || !strings.Contains(out, "already exists") {
		t.Errorf("second up of the same lab: %v\n%s", err, out)
	}
	for _, n := range names {
		if out, err := r.run("lab", "down", "--name", n); err != nil {
			t.Errorf("lab down %s: %v\n%s", n, err, out)
		}
		if l := leftovers(t, n, r.root); len(l) > 0 {
			t.Errorf("lab %s left %v", n, l)
		}
	}
	// down removes its lab's namespaces and nothing else: a decoy whose
	// name starts with the lab's name (but not "<name>-") survives.
	if _, err := os.Stat(lab.NSPath(decoy)); err != nil {
		t.Errorf("weft lab down removed %s, which is not the lab's: %v", decoy, err)
	}
}

// `weft lab up` killed half-way: `weft lab down` still removes every
// namespace and process, found by the lab's name.
func TestLabDownAfterKilledUp(t *testing.T) {
	testenv.EndToEnd(t, "builds labs of network namespaces")
	r := labRunner{t: t, weft: filepath.Join(bin(t), "weft"), root: t.TempDir()}
	// Killed once its first namespace exists, and once a process of the
	// lab runs in it (etcd, then the weftds): points in the build, not
	// times, which a loaded machine would shift.
	for _, after := range []struct {
		what string
		done func([]string) bool
	}{
		{"the first namespace", func(l []string) bool { return len(l) > 0 }},
		{"a process in the lab", func(l []string) bool { return slices.ContainsFunc(l, isProcs) }},
	} {
		name := randLab(t)
		t.Cleanup(func() { _, _ = r.run("lab", "down", "--name", name) })
		c := r.cmd("lab", "up", "--name", name, "--nodes", "3", "--pods", "2")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for !after.done(leftovers(t, name, r.root)) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		_ = c.Process.Signal(syscall.SIGKILL)
		_ = c.Wait()
		if l := leftovers(t, name, r.root); !after.done(l) {
			t.Fatalf("killed after %s: not there within 30 s (%v), the test proves nothing", after.what, l)
		} else {
			t.Logf("killed after %s: %d namespaces and processes left", after.what, len(l))
		}
		if out, err := r.run("lab", "down", "--name", name); err != nil {
			t.Fatalf("lab down after kill: %v\n%s", err, out)
		}
		if l := leftovers(t, name, r.root); len(l) > 0 {
			t.Errorf("killed after %s: lab left %v", after.what, l)
		}
		if _, err := os.Stat(filepath.Join(r.root, name)); !os.IsNotExist(err) {
			t.Errorf("lab directory survived down: %v", err)
		}
	}
}

func randLab(t *testing.T) string {
	n, err := lab.RandomName("t")
	if err != nil {
		t.Fatal(err)
	}
	return n
}
