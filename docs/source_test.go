package docs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// module is weft's module path.
const module = "github.com/weft-net/weft"

// goFile is one parsed non-test Go file of the module.
type goFile struct {
	path string // relative to the repository's root
	ast  *ast.File
}

// linkedFiles parses the non-test Go files of the module's packages that
// the command in cmdDir (e.g. "cmd/weftd") links, following its imports
// within the module. Build tags are ignored: every GOOS's files count.
func linkedFiles(t *testing.T, root, cmdDir string) []goFile {
	t.Helper()
	fset := token.NewFileSet()
	seen := map[string]bool{cmdDir: true}
	queue := []string{cmdDir}
	var out []goFile
	for len(queue) > 0 {
		dir := queue[0]
		queue = queue[1:]
		for _, f := range parseDir(t, fset, root, dir) {
			out = append(out, f)
			for _, imp := range f.ast.Imports {
				path, err := strconv.Unquote(imp.Path.Value)
				if err != nil || !strings.HasPrefix(path, module+"/") {
					continue
				}
				if d := strings.TrimPrefix(path, module+"/"); !seen[d] {
					seen[d] = true
					queue = append(queue, d)
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("no Go files found for %s", cmdDir)
	}
	return out
}

// parseDir parses the non-test .go files of one package directory.
func parseDir(t *testing.T, fset *token.FileSet, root, dir string) []goFile {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(root, dir))
	if err != nil {
		t.Fatalf("read package %s: %v", dir, err)
	}
	var out []goFile
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		rel := filepath.Join(dir, name)
		f, err := parser.ParseFile(fset, filepath.Join(root, rel), nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatalf("parse %s: %v", rel, err)
		}
		out = append(out, goFile{path: rel, ast: f})
	}
	return out
}

var envNameRE = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

// envLookups returns the environment variables the files read by name: the
// first argument of every call to a function or method whose name ends in
// "env" (os.Getenv, os.LookupEnv, a Deps.Getenv, a lookupEnv field), when it
// is a string constant.
func envLookups(files []goFile) map[string]string {
	out := map[string]string{}
	for _, f := range files {
		ast.Inspect(f.ast, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 || !strings.HasSuffix(strings.ToLower(funcName(call.Fun)), "env") {
				return true
			}
			if s, ok := stringLit(call.Args[0]); ok && envNameRE.MatchString(s) {
				out[s] = f.path
			}
			return true
		})
	}
	return out
}

// metricDecls returns the metric families the files declare: the name of
// every prometheus.NewDesc call and of every *Opts literal (Namespace,
// Subsystem and Name joined as client_golang joins them), when they are
// string constants.
func metricDecls(files []goFile) map[string]string {
	out := map[string]string{}
	for _, f := range files {
		ast.Inspect(f.ast, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				if funcName(n.Fun) == "NewDesc" && len(n.Args) > 0 {
					if s, ok := stringLit(n.Args[0]); ok {
						out[s] = f.path
					}
				}
			case *ast.CompositeLit:
				if name := optsName(n); name != "" {
					out[name] = f.path
				}
			}
			return true
		})
	}
	return out
}

// optsName is the full metric name of a prometheus.*Opts literal, or "".
func optsName(lit *ast.CompositeLit) string {
	sel, ok := lit.Type.(*ast.SelectorExpr)
	if !ok || !strings.HasSuffix(sel.Sel.Name, "Opts") {
		return ""
	}
	if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "prometheus" {
		return ""
	}
	parts := map[string]string{}
	for _, e := range lit.Elts {
		kv, ok := e.(*ast.KeyValueExpr)
		if !ok {
			continue
		}
		key, ok := kv.Key.(*ast.Ident)
		if !ok {
			continue
		}
		if s, ok := stringLit(kv.Value); ok {
			parts[key.Name] = s
		}
	}
	if parts["Name"] == "" {
		return ""
	}
	var name []string
	for _, k := range []string{"Namespace", "Subsystem", "Name"} {
		if parts[k] != "" {
			name = append(name, parts[k])
		}
	}
	return strings.Join(name, "_")
}

// funcName is the name a call's function goes by: f, x.f or x.y.f.
func funcName(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		return e.Sel.Name
	}
	return ""
}

func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

// makeTargets returns the Makefile's targets: the names after .PHONY and the
// names before the colon of every rule (variables, patterns and special
// targets left out).
func makeTargets(t *testing.T, root string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatalf("read Makefile: %v", err)
	}
	rule := regexp.MustCompile(`^([^\s:=#][^:=#]*?)\s*::?(?:[^=]|$)`)
	set := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		if names, ok := strings.CutPrefix(l, ".PHONY:"); ok {
			for _, n := range strings.Fields(names) {
				set[n] = true
			}
			continue
		}
		m := rule.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		for _, n := range strings.Fields(m[1]) {
			if !strings.HasPrefix(n, ".") && !strings.ContainsAny(n, "$%/") {
				set[n] = true
			}
		}
	}
	targets := make([]string, 0, len(set))
	for n := range set {
		targets = append(targets, n)
	}
	slices.Sort(targets)
	return targets
}

func TestMakeTargetsParser(t *testing.T) {
	dir := t.TempDir()
	mk := ".PHONY: a b\nGO ?= go\nX := y\nc: a\n\t$(GO) build\nd e: c\n$(BIN)/x: c\n%.o: %.c\n.PHONY: f\nf:\n# g: comment\n"
	if err := os.WriteFile(filepath.Join(dir, "Makefile"), []byte(mk), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, want := makeTargets(t, dir), []string{"a", "b", "c", "d", "e", "f"}; !slices.Equal(got, want) {
		t.Errorf("makeTargets = %q, want %q", got, want)
	}
}

func TestSourceScanners(t *testing.T) {
	root := t.TempDir()
	for dir, src := range map[string]string{
		"cmd/x": `package main

import (
	"os"

	"github.com/weft-net/weft/internal/y"
)

func main() { os.LookupEnv("GOGC"); y.F(); os.Getenv(name) }
`,
		"internal/y": `package y

import "github.com/prometheus/client_golang/prometheus"

type deps struct{ lookupEnv func(string) (string, bool) }

func F() {
	var d deps
	d.lookupEnv("WEFT_Y_PATH")
	prometheus.NewDesc("weft_y_up", "help", nil, nil)
	prometheus.NewCounter(prometheus.CounterOpts{Namespace: "weft", Subsystem: "y", Name: "total"})
	prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_y_peers"})
	_ = "WEFT_NOT_AN_ENV_LOOKUP"
}
`,
		"internal/z": `package z

func init() { os.Getenv("WEFT_UNLINKED") }
`,
	} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, dir, "a.go"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	files := linkedFiles(t, root, "cmd/x")
	if len(files) != 2 {
		t.Fatalf("linkedFiles found %d files, want cmd/x and internal/y", len(files))
	}
	env := slices.Sorted(maps.Keys(envLookups(files)))
	if want := []string{"GOGC", "WEFT_Y_PATH"}; !slices.Equal(env, want) {
		t.Errorf("envLookups = %q, want %q", env, want)
	}
	fams := slices.Sorted(maps.Keys(metricDecls(files)))
	if want := []string{"weft_y_peers", "weft_y_total", "weft_y_up"}; !slices.Equal(fams, want) {
		t.Errorf("metricDecls = %q, want %q", fams, want)
	}
}
