//go:build linux

package cli

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/testenv"
)

// checkExec runs commands in lab name, whose `weft lab up` printed upOut,
// as the README shows them: a command's exit code is weft's; weft status
// in a node needs no flags (it asks the node's weftd); ping between pods
// works on a fresh machine (make lab installs it).
func checkExec(t *testing.T, r labRunner, name, upOut string) {
	t.Helper()
	c := r.cmd("lab", "exec", "--name", name, "n1", "--", "sh", "-c", "exit 7")
	if err := c.Run(); c.ProcessState == nil || c.ProcessState.ExitCode() != 7 {
		t.Errorf("weft lab exec n1 -- sh -c 'exit 7': %v, want exit status 7", err)
	}
	start := time.Now()
	out, err := r.run("lab", "exec", "--name", name, "n1", "--", "weft", "status")
	if err != nil || !strings.Contains(out, "options  weftd (pid ") || !strings.Contains(out, "kernel   in sync with the store") ||
		!strings.Contains(out, "weftd    ready") {
		t.Errorf("weft lab exec n1 -- weft status (no flags): %v after %v\n%s", err, time.Since(start), out)
	}
	m := regexp.MustCompile(`n2-p1=(\S+)`).FindStringSubmatch(upOut)
	if m == nil {
		t.Fatalf("no n2-p1 in lab up's output:\n%s", upOut)
	}
	if out, err := r.run("lab", "exec", "--name", name, "n1-p1", "--", "ping", "-c", "1", "-W", "5", m[1]); err != nil {
		t.Errorf("weft lab exec n1-p1 -- ping -c 1 %s: %v\n%s", m[1], err, out)
	}
}

func TestPrintLabs(t *testing.T) {
	var b bytes.Buffer
	printLabs(&b, nil)
	if !strings.Contains(b.String(), "no lab exists") {
		t.Errorf("printLabs with no lab = %q, want it to say so", b.String())
	}
	b.Reset()
	printLabs(&b, []string{"weft", "t1"})
	if b.String() != "weft\nt1\n" {
		t.Errorf("printLabs = %q", b.String())
	}
}

// weft lab down of a lab that does not exist says so and fails.
func TestLabDownNone(t *testing.T) {
	testenv.EndToEnd(t, "runs weft lab")
	r := labRunner{t: t, weft: filepath.Join(bin(t), "weft"), root: t.TempDir()}
	name := randLab(t)
	out, err := r.run("lab", "down", "--name", name)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(out, "there is no lab "+name) || strings.Contains(out, "removed") {
		t.Errorf("weft lab down of no lab: %v\n%s\nwant a non-zero exit saying there is no lab", err, out)
	}
}

// A node whose weftd fails: weft lab up's message carries the cause from
// weftd's log, and names only the logs that exist.
func TestLabUpFailureShowsCause(t *testing.T) {
	testenv.EndToEnd(t, "builds a lab of network namespaces")
	real := bin(t)
	dir := t.TempDir()
	for _, b := range []string{"weft", "weft-lab"} {
		copyFile(t, filepath.Join(real, b), filepath.Join(dir, b))
	}
	if err := os.Symlink(filepath.Join(real, "cni"), filepath.Join(dir, "cni")); err != nil {
		t.Fatal(err)
	}
	fake := "#!/bin/sh\necho 'time=1 level=INFO msg=\"starting weftd\"'\necho 'weftd: set up the forward rules: exec: \"iptables\": executable file not found in $PATH' >&2\nexit 1\n"
	if err := os.WriteFile(filepath.Join(dir, "weftd"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	r := labRunner{t: t, weft: filepath.Join(dir, "weft"), root: t.TempDir()}
	name := randLab(t)
	t.Cleanup(func() { _, _ = r.run("lab", "down", "--name", name) })
	out, err := r.run("lab", "up", "--name", name, "--nodes", "1", "--pods", "0")
	if err == nil {
		t.Fatalf("lab up with a failing weftd succeeded:\n%s", out)
	}
	for _, want := range []string{`executable file not found`, "last errors of", "etcd.log", "n1/weftd.log"} {
		if !strings.Contains(out, want) {
			t.Errorf("lab up's failure lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "kube/") || strings.Contains(out, "starting weftd\"") {
		t.Errorf("lab up's failure names logs that do not exist or lines that are not errors:\n%s", out)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// weft lab up checks its tools before building anything, and names the
// packages to install.
func TestPreflight(t *testing.T) {
	have := func(names ...string) func(string) (string, error) {
		return func(n string) (string, error) {
			for _, h := range names {
				if h == n {
					return "/usr/sbin/" + n, nil
				}
			}
			return "", exec.ErrNotFound
		}
	}
	if err := preflight(have("ip", "iptables", "ip6tables")); err != nil {
		t.Errorf("preflight with every tool: %v", err)
	}
	err := preflight(have("ip"))
	if err == nil || !strings.Contains(err.Error(), "iptables, ip6tables") ||
		!strings.HasSuffix(err.Error(), "apt-get install -y --no-install-recommends iptables") {
		t.Errorf("preflight without iptables = %v, want both commands named and one package to install", err)
	}
}
