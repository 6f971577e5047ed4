//go:build linux

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/internal/lab"
)

// Helpers of the restart test in masq_restart_test.go: a PATH shim that
// records every netfilter command weftd runs, and a 100 Hz ping.

// netfilterBinaries are the commands weftd may run for its rules (either
// iptables variant, either family, and nft).
func netfilterBinaries() []string {
	return []string{
		"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore",
		"iptables-legacy", "iptables-legacy-save", "iptables-legacy-restore",
		"ip6tables-legacy", "ip6tables-legacy-save", "ip6tables-legacy-restore",
		"iptables-nft", "iptables-nft-save", "iptables-nft-restore",
		"ip6tables-nft", "ip6tables-nft-save", "ip6tables-nft-restore",
		"nft",
	}
}

// shimScript records one call (argv, then stdin with "> " before each line)
// as a file of its own in a directory per network namespace, written aside
// and renamed into place, so a reader never sees half a call; the name
// starts with the time in nanoseconds, which orders the calls. Then it runs
// the real binary on the same stdin and exits with its status.
const shimScript = `#!/bin/sh
ns=$(readlink /proc/self/ns/net | tr -dc 0-9)
dir=%[2]q/"$ns"
mkdir -p "$dir"
tmp=$(mktemp -p %[2]q)
cat > "$tmp"
{ printf 'CALL %%s' %[1]q; for a in "$@"; do printf ' %%s' "$a"; done; printf '\n'; sed 's/^/> /' "$tmp"; } > "$tmp.call"
mv "$tmp.call" "$dir/$(date +%%s%%N)-$$.call"
%[3]q "$@" < "$tmp"
rc=$?
rm -f "$tmp"
exit $rc
`

// netfilterShim is a directory of recording shims to put first in weftd's
// PATH, and the directory of their logs.
type netfilterShim struct {
	bin, logs string
}

func newNetfilterShim(t *testing.T) netfilterShim {
	t.Helper()
	s := netfilterShim{bin: t.TempDir(), logs: t.TempDir()}
	for _, name := range netfilterBinaries() {
		real, err := exec.LookPath(name)
		if err != nil {
			continue
		}
		script := fmt.Sprintf(shimScript, name, s.logs, real)
		if err := os.WriteFile(filepath.Join(s.bin, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// env is the PATH entry for weftd's environment.
func (s netfilterShim) env() string { return "PATH=" + s.bin + ":" + os.Getenv("PATH") }

// take returns the calls recorded in namespace ns since the last take, in
// the order they were made, one per element (the CALL line and its stdin
// lines), and removes their records.
func (s netfilterShim) take(t *testing.T, ns string) []string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(lab.NSPath(ns), &st); err != nil {
		t.Fatalf("stat netns %s: %v", ns, err)
	}
	dir := filepath.Join(s.logs, strconv.FormatUint(st.Ino, 10))
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var calls []string
	for _, e := range entries { // ReadDir sorts by name: by time
		if !strings.HasSuffix(e.Name(), ".call") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		calls = append(calls, strings.TrimPrefix(string(b), "CALL "))
	}
	return calls
}

// writes returns the calls among calls that may change the ruleset: all but
// listings (iptables -S/-L/-C, *-save, nft list) and version queries. An
// unknown command counts as a write.
func writes(calls []string) []string {
	var out []string
	for _, c := range calls {
		if !isRead(strings.Fields(strings.SplitN(c, "\n", 2)[0])) {
			out = append(out, c)
		}
	}
	return out
}

func isRead(argv []string) bool {
	if len(argv) == 0 {
		return false
	}
	name, args := argv[0], argv[1:]
	switch {
	case strings.HasSuffix(name, "-save"):
		return true
	case strings.HasSuffix(name, "-restore"):
		return false
	case name == "nft":
		if slices.Contains(args, "-f") || slices.Contains(args, "--file") {
			return slices.Contains(args, "-c") || slices.Contains(args, "--check")
		}
		i := slices.IndexFunc(args, func(a string) bool { return !strings.HasPrefix(a, "-") })
		if i < 0 {
			return slices.ContainsFunc(args, func(a string) bool { return a == "-v" || a == "--version" || a == "-V" })
		}
		return args[i] == "list"
	default: // iptables, ip6tables and their variants
		return slices.ContainsFunc(args, func(a string) bool {
			return slices.Contains([]string{"-S", "--list-rules", "-L", "--list", "-C", "--check", "--version", "-V"}, a)
		})
	}
}

// pinger is `ping -i 0.01 -c count`: a 100 Hz ping from a namespace.
type pinger struct {
	cmd  *exec.Cmd
	out  strings.Builder
	done chan struct{} // closed when ping exited
}

func startPing(t *testing.T, ns string, dst netip.Addr, count int) *pinger {
	t.Helper()
	p := &pinger{done: make(chan struct{}),
		cmd: lab.Command(context.Background(), ns, "ping", "-n", "-q", "-i", "0.01", "-W", "2", "-c", strconv.Itoa(count), dst.String())}
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// running reports whether ping is still sending.
func (p *pinger) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// wait waits for ping to finish and returns (sent, received).
func (p *pinger) wait(t *testing.T) (int, int) {
	t.Helper()
	<-p.done
	m := pingSummary.FindStringSubmatch(p.out.String())
	if m == nil {
		t.Fatalf("ping output: %s", p.out.String())
	}
	sent, _ := strconv.Atoi(m[1])
	recv, _ := strconv.Atoi(m[2])
	return sent, recv
}
