package docs

import (
	"flag"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weft-net/weft/internal/backend/registry"
	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/metrics"
)

// readmeMaxLines is how long the README, the front door, may grow.
const readmeMaxLines = 220

// Every flag weftd accepts has a row in the Flags table of
// configuration.md, named in its first cell as `--name` (or `-n`).
func TestFlagsDocumented(t *testing.T) {
	root := repoRoot(t)
	rows := tableRows(readPage(t, root, "docs/configuration.md").section("Flags"))
	if len(rows) == 0 {
		t.Fatal("docs/configuration.md has no table under its \"Flags\" heading")
	}
	o := config.Defaults()
	o.Backends = registry.Default().Settings() // the backend types' own flags
	fs := flag.NewFlagSet("weftd", flag.ContinueOnError)
	o.AddFlags(fs)
	fs.VisitAll(func(f *flag.Flag) {
		forms := []string{"`--" + f.Name + "`"}
		if len(f.Name) == 1 {
			forms = append(forms, "`-"+f.Name+"`")
		}
		for _, r := range rows {
			for _, form := range forms {
				if strings.Contains(r[0], form) {
					return
				}
			}
		}
		t.Errorf("weftd flag --%s (config.Options.AddFlags, or a backend type's Settings) has no row in the Flags table of docs/configuration.md", f.Name)
	})
}

// Every environment variable weftd reads appears in the Environment
// variables section of configuration.md: those config.ParseOptions asks for
// (FLANNELD_* aside, the flags' forms) and those read by name in the
// packages weftd links (GOGC).
func TestEnvironmentDocumented(t *testing.T) {
	root := repoRoot(t)
	text := strings.Join(readPage(t, root, "docs/configuration.md").section("Environment variables"), "\n")
	if text == "" {
		t.Fatal("docs/configuration.md has no \"Environment variables\" section")
	}
	want := envLookups(linkedFiles(t, root, "cmd/weftd"))
	_, _ = config.ParseOptions(nil, func(k string) (string, bool) {
		want[k] = "internal/config (ParseOptions)"
		return "", false
	}, registry.Default().Settings())
	if !strings.Contains(text, "`FLANNELD_<NAME>`") {
		t.Error("docs/configuration.md's Environment variables section does not state the FLANNELD_<NAME> rule")
	}
	for name, where := range want {
		if strings.HasPrefix(name, "FLANNELD_") {
			continue
		}
		if strings.HasPrefix(name, "WEFT_") {
			// What an operator may set is a flag (with its FLANNELD_
			// form) or a net-conf.json option; a lab passes one of those.
			t.Errorf("weftd reads the environment variable %s (in %s): make it a flag", name, where)
		}
		if !strings.Contains(text, "`"+name+"`") {
			t.Errorf("environment variable %s (read in %s) is not in docs/configuration.md's Environment variables section", name, where)
		}
	}
}

var fqNameRE = regexp.MustCompile(`fqName: "([^"]+)"`)

// Every metric family weftd exports appears in observability.md: weft's own
// each in the first cell of a table row of the Metrics section, the
// collectors' (go_*, process_*) by their prefix.
func TestMetricsDocumented(t *testing.T) {
	root := repoRoot(t)
	section := readPage(t, root, "docs/observability.md").section("Metrics")
	rows := tableRows(section)
	text := strings.Join(section, "\n")
	families := metricDecls(linkedFiles(t, root, "cmd/weftd"))
	ch := make(chan *prometheus.Desc)
	go func() {
		metrics.New("docs-test").Registry().Describe(ch)
		close(ch)
	}()
	for d := range ch {
		if m := fqNameRE.FindStringSubmatch(d.String()); m != nil {
			families[m[1]] = "internal/metrics (the registry of metrics.New)"
		}
	}
	if len(families) == 0 {
		t.Fatal("found no metric families")
	}
	collectors := map[string]string{} // prefix: one family of it
	for name, where := range families {
		if !strings.HasPrefix(name, "weft_") {
			prefix, _, _ := strings.Cut(name, "_")
			collectors[prefix] = name
			continue
		}
		if !slices.ContainsFunc(rows, func(r []string) bool { return strings.Contains(r[0], "`"+name+"`") }) {
			t.Errorf("metric family %s (declared in %s) has no row in docs/observability.md's Metrics table", name, where)
		}
	}
	for prefix, name := range collectors {
		if !strings.Contains(text, "`"+prefix+"_*`") {
			t.Errorf("metric families %s_* (e.g. %s, from the registry's collectors): docs/observability.md's Metrics section does not mention `%s_*`", prefix, name, prefix)
		}
	}
}

// Every make target appears on development.md as `make <target>`.
func TestMakeTargetsDocumented(t *testing.T) {
	root := repoRoot(t)
	b, err := os.ReadFile(filepath.Join(root, "docs", "development.md"))
	if err != nil {
		t.Fatalf("read docs/development.md: %v", err)
	}
	targets := makeTargets(t, root)
	if len(targets) == 0 {
		t.Fatal("found no targets in the Makefile")
	}
	for _, tg := range targets {
		if !regexp.MustCompile("`make " + regexp.QuoteMeta(tg) + "[` ]").Match(b) {
			t.Errorf("make target %q is not documented in docs/development.md (as `make %s`)", tg, tg)
		}
	}
}

// Every relative link and image of the README, BENCHMARKS.md and docs/*.md
// points at a file that exists, and its #anchor at a heading of that file.
func TestLinksResolve(t *testing.T) {
	root := repoRoot(t)
	ps := pages(t, root)
	anchors := map[string]map[string]bool{}
	for _, p := range ps {
		anchors[p.path] = p.anchors()
	}
	for _, p := range ps {
		for _, l := range p.links() {
			if strings.Contains(l.target, "://") || strings.HasPrefix(l.target, "mailto:") {
				continue
			}
			file, anchor, _ := strings.Cut(l.target, "#")
			target := p.path
			if file != "" {
				target = path.Clean(path.Join(path.Dir(p.path), file))
				if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(target))); err != nil {
					t.Errorf("%s:%d: link %s: no such file %s", p.path, l.line, l.target, target)
					continue
				}
			}
			if anchor == "" || !strings.HasSuffix(target, ".md") {
				continue
			}
			a, ok := anchors[target]
			if !ok {
				a = readPage(t, root, target).anchors()
				anchors[target] = a
			}
			if !a[anchor] {
				t.Errorf("%s:%d: link %s: %s has no heading with the anchor #%s", p.path, l.line, l.target, target, anchor)
			}
		}
	}
}

var (
	dateRE    = regexp.MustCompile(`\b20\d\d-[01]\d-[0-3]\d\b`)
	timeRE    = regexp.MustCompile(`\b([01]?\d|2[0-3]):[0-5]\d\b`)
	sessionRE = regexp.MustCompile(`(?i)\b(this session|today'?s?|tonight|this morning|this afternoon|the evening'?s?|yesterday)\b`)
)

// The pages are a reference that stays true: their prose (outside code)
// names no date, no time of day and no session.
func TestNoDatesOrSessions(t *testing.T) {
	root := repoRoot(t)
	for _, p := range pages(t, root) {
		for i := range p.lines {
			text := p.proseText(i)
			for _, re := range []*regexp.Regexp{dateRE, timeRE, sessionRE} {
				if m := re.FindString(text); m != "" {
					t.Errorf("%s:%d: %q: a reference page carries no dates, times of day or session story", p.path, i+1, m)
				}
			}
		}
	}
}

// The README is the front door: short.
func TestReadmeLength(t *testing.T) {
	root := repoRoot(t)
	p := readPage(t, root, "README.md")
	n := len(p.lines)
	if p.lines[n-1] == "" {
		n-- // the final newline ends the last line
	}
	if n > readmeMaxLines {
		t.Errorf("README.md has %d lines; keep it at most %d and move reference material to docs/", n, readmeMaxLines)
	}
}
