package netfilter_test

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/netfilter"
	"github.com/weft-net/weft/internal/netfilter/iptables"
	"github.com/weft-net/weft/internal/netfilter/netfiltertest"
	"github.com/weft-net/weft/internal/netfilter/nftables"

	"github.com/weft-net/weft/internal/testenv"
)

// mode is one way of installing the rules, with its listing and breakers.
type mode struct {
	name    string
	bins    []string
	backend func(r netfilter.Runner, log *slog.Logger) netfilter.Backend
	// ours lists weft's objects only, in a stable text form.
	ours func(t *testing.T, ns string) string
	// expect renders, by hand from SPEC, what ours must show for cfg.
	expect func(cfg netfilter.Config) string
	// breaks are commands (run in the namespace) that damage weft's rules.
	breaks map[string][][]string
}

func iptablesMode(bin string) mode {
	return mode{
		name: bin,
		bins: []string{bin, bin + "-save", bin + "-restore", ip6(bin), ip6(bin) + "-restore"},
		backend: func(r netfilter.Runner, log *slog.Logger) netfilter.Backend {
			return iptables.New(r, log, iptables.Options{IPTables: bin, IP6Tables: ip6(bin)})
		},
		ours:   func(t *testing.T, ns string) string { return iptablesOurs(t, ns, bin) },
		expect: expectIPTables,
		breaks: map[string][][]string{
			"rule":      {{bin, "-t", "nat", "-D", "FLANNEL-POSTRTG", "3"}},
			"changed":   {{bin, "-t", "nat", "-R", "FLANNEL-POSTRTG", "2", "-s", "10.9.0.0/16", "-j", "RETURN"}},
			"appended":  {{ip6(bin), "-t", "filter", "-A", "FLANNEL-FWD", "-j", "DROP"}},
			"jump":      {{bin, "-t", "filter", "-D", "FORWARD", "1"}},
			"duplicate": {{ip6(bin), "-t", "nat", "-A", "POSTROUTING", "-m", "comment", "--comment", "flanneld masq", "-j", "FLANNEL-POSTRTG"}},
			"chain": {
				{bin, "-t", "nat", "-D", "POSTROUTING", "1"},
				{bin, "-t", "nat", "-F", "FLANNEL-POSTRTG"},
				{bin, "-t", "nat", "-X", "FLANNEL-POSTRTG"},
			},
		},
	}
}

func ip6(bin string) string { return strings.Replace(bin, "iptables", "ip6tables", 1) }

func nftMode() mode {
	return mode{
		name: "nftables",
		bins: []string{"nft"},
		backend: func(r netfilter.Runner, log *slog.Logger) netfilter.Backend {
			return nftables.New(r, log)
		},
		ours:   nftOurs,
		expect: expectNFT,
		breaks: map[string][][]string{
			"rule":     {{"nft", "flush", "chain", "ip", "flannel-ipv4", "postrtg"}},
			"chain":    {{"nft", "delete", "chain", "ip6", "flannel-ipv6", "forward"}},
			"table":    {{"nft", "delete", "table", "ip", "flannel-ipv4"}},
			"appended": {{"nft", "add", "rule", "ip", "flannel-ipv4", "forward", "drop"}},
		},
	}
}

// modes returns every mode whose binaries are installed.
func modes(t *testing.T) []mode {
	all := []mode{iptablesMode("iptables"), iptablesMode("iptables-legacy"), nftMode()}
	var out []mode
	for _, m := range all {
		if missing := missingBinary(m.bins); missing != "" {
			t.Logf("mode %s not tested: %s is not installed", m.name, missing)
			continue
		}
		out = append(out, m)
	}
	return out
}

// env is one mode's manager inside a fresh namespace.
type env struct {
	ns     string
	mode   mode
	runner *countingRunner
	syncer *netfilter.Syncer
	logs   *testenv.LogBuffer
}

func newEnv(t *testing.T, m mode, resync time.Duration) *env {
	t.Helper()
	netfiltertest.RequireRoot(t, m.bins...)
	return newEnvIn(t, m, resync, netfiltertest.NewNS(t))
}

// newEnvIn is newEnv in an existing namespace ns.
func newEnvIn(t *testing.T, m mode, resync time.Duration, ns string) *env {
	t.Helper()
	e := &env{ns: ns, mode: m, runner: &countingRunner{r: netfiltertest.Runner(ns)}, logs: &testenv.LogBuffer{}}
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.syncer = netfilter.NewSyncer(m.backend(e.runner, log), log, resync)
	return e
}

func (e *env) set(t *testing.T, cfg netfilter.Config) {
	t.Helper()
	if err := e.syncer.Set(context.Background(), cfg); err != nil {
		t.Fatalf("Set: %v", err)
	}
}

// check compares weft's objects in the namespace with the expected text.
func (e *env) check(t *testing.T, cfg netfilter.Config) {
	t.Helper()
	if got, want := e.mode.ours(t, e.ns), e.mode.expect(cfg); got != want {
		t.Fatalf("%s rules:\n%s\nwant:\n%s", e.mode.name, got, want)
	}
}

// sh runs a command in the namespace.
func (e *env) sh(t *testing.T, argv ...string) string {
	t.Helper()
	return netfiltertest.MustRun(t, "ip", append([]string{"netns", "exec", e.ns}, argv...)...)
}

// countingRunner counts the commands that write to the kernel.
type countingRunner struct {
	r      netfilter.Runner
	mu     sync.Mutex
	writes int
}

func (c *countingRunner) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	if strings.HasSuffix(name, "-restore") || (name == "nft" && len(args) > 0 && (args[0] == "-f" || args[0] == "delete")) {
		c.mu.Lock()
		c.writes++
		c.mu.Unlock()
	}
	return c.r.Run(ctx, stdin, name, args...)
}

func (c *countingRunner) Writes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

// saveTable returns `<bin>-save -t table` without comments and counters.
func saveTable(t *testing.T, ns, bin, table string) string {
	counters := regexp.MustCompile(`\[\d+:\d+\]`)
	out := netfiltertest.MustRun(t, "ip", "netns", "exec", ns, bin+"-save", "-t", table)
	var keep []string
	for _, line := range strings.Split(out, "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			keep = append(keep, counters.ReplaceAllString(line, "[0:0]"))
		}
	}
	return strings.Join(keep, "\n") + "\n"
}

// iptablesOurs keeps the lines of both families' nat and filter tables
// that declare or mention weft's chains.
func iptablesOurs(t *testing.T, ns, bin string) string {
	var b strings.Builder
	for _, fam := range []string{bin, ip6(bin)} {
		for _, table := range []string{"nat", "filter"} {
			fmt.Fprintf(&b, "# %s %s\n", strings.SplitN(fam, "-", 2)[0], table)
			for _, line := range strings.Split(saveTable(t, ns, fam, table), "\n") {
				if strings.Contains(line, "FLANNEL-") {
					b.WriteString(line + "\n")
				}
			}
		}
	}
	return b.String()
}

// nftOurs lists weft's two tables (when present), trimmed.
func nftOurs(t *testing.T, ns string) string {
	var b strings.Builder
	tables := netfiltertest.MustRun(t, "ip", "netns", "exec", ns, "nft", "list", "tables")
	for _, ft := range [][2]string{{"ip", "flannel-ipv4"}, {"ip6", "flannel-ipv6"}} {
		if !strings.Contains(tables, "table "+ft[0]+" "+ft[1]+"\n") && !strings.HasSuffix(tables, "table "+ft[0]+" "+ft[1]) {
			continue
		}
		out := netfiltertest.MustRun(t, "ip", "netns", "exec", ns, "nft", "list", "table", ft[0], ft[1])
		for _, line := range strings.Split(out, "\n") {
			if line = strings.TrimSpace(line); line != "" {
				b.WriteString(line + "\n")
			}
		}
	}
	return b.String()
}

// missingBinary returns the first of bins not in PATH, or "".
func missingBinary(bins []string) string {
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			return b
		}
	}
	return ""
}
