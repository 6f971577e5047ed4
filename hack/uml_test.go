//go:build linux

package hack

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/testenv"
)

// runUML runs hack/uml/run.sh with args, its working directory under tmp,
// and returns its output and exit code.
func runUML(t *testing.T, tmp string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command("bash", append([]string{"uml/run.sh"}, args...)...)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("run.sh: %v\n%s", err, out)
	return "", 0
}

// assertNothingLeft checks that the runner removed its working directory
// from tmp and that no process of its UML machine (whose command line names
// that directory) is left.
func assertNothingLeft(t *testing.T, tmp string) {
	t.Helper()
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("left in TMPDIR: %v", left)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(tmp)) {
			t.Errorf("a process of the UML machine is left: %s: %q", p, bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
}

// hack/uml/run.sh boots Debian's UML kernel on this machine's files, runs
// the command in this directory with the given environment, returns its
// output and exit status, and leaves nothing behind: not its files, not a
// process, not the network namespace the command made (that is the UML
// kernel's).
func TestUMLRun(t *testing.T) {
	testenv.Privileged(t, "boots a User-Mode Linux kernel", "linux.uml", "modprobe")
	var b [4]byte
	_, _ = rand.Read(b[:])
	ns := "weft-uml-test-" + hex.EncodeToString(b[:])
	tmp := t.TempDir()
	wd, _ := os.Getwd()
	out, code := runUML(t, tmp, "-e", "GREETING=hello world", "--",
		"sh", "-c", `echo "$GREETING"; pwd; echo to-stderr >&2; ip netns add "$1" && ip netns list; ip link add probe type ipip local 192.0.2.1 && echo ipip-ok; exit 7`,
		"sh", ns)
	if code != 7 {
		t.Fatalf("exit %d, want the command's 7\n%s", code, out)
	}
	for _, want := range []string{"uml: kernel 6.1.", "hello world\n", wd + "\n", "to-stderr\n", ns, "ipip-ok\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
		t.Errorf("the UML machine's namespace %s is in this machine's /run/netns", ns)
	}
	assertNothingLeft(t, tmp)
}

// Bad input and failures, each with a clear message: no command, an option
// it does not know, a kernel that is not there, and a command that outlives
// --timeout (the UML machine killed, exit 124, nothing left).
func TestUMLRunFailures(t *testing.T) {
	testenv.Privileged(t, "boots a User-Mode Linux kernel", "linux.uml", "modprobe")
	tmp := t.TempDir()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "no command given"},
		{[]string{"--frobnicate", "true"}, 2, "unknown option --frobnicate"},
		{[]string{"-e", "novalue", "true"}, 2, "-e wants NAME=VALUE"},
		{[]string{"--kernel", filepath.Join(tmp, "nope"), "true"}, 2, "hack/uml-kernel.sh builds one"},
		{[]string{"--timeout", "soon", "true"}, 2, "--timeout wants seconds"},
	} {
		out, code := runUML(t, tmp, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("run.sh %q: exit %d, %q; want exit %d saying %q", tc.args, code, out, tc.code, tc.want)
		}
	}
	start := time.Now()
	out, code := runUML(t, tmp, "--timeout", "3", "--", "sleep", "600")
	if code != 124 || !strings.Contains(out, "did not finish within 3 s") {
		t.Errorf("a command past --timeout: exit %d after %v, want 124\n%s", code, time.Since(start), out)
	}
	assertNothingLeft(t, tmp)
}
