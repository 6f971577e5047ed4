package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// page is one markdown file, read once.
type page struct {
	path  string   // relative to the repository's root, e.g. "docs/configuration.md"
	lines []string // the file's lines
	prose []bool   // prose[i]: line i is outside a fenced code block
}

// repoRoot is the repository's root: the parent of this package's directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatalf("working directory: %v", err)
	}
	return filepath.Dir(wd)
}

// readPage reads the markdown file at rel (relative to root).
func readPage(t *testing.T, root, rel string) *page {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatalf("read %s: %v", rel, err)
	}
	p := &page{path: rel, lines: strings.Split(string(b), "\n")}
	inFence := false
	for _, l := range p.lines {
		fence := strings.HasPrefix(strings.TrimSpace(l), "```")
		if fence {
			inFence = !inFence
		}
		p.prose = append(p.prose, !inFence && !fence)
	}
	return p
}

// pages returns README.md, BENCHMARKS.md and every docs/*.md.
func pages(t *testing.T, root string) []*page {
	t.Helper()
	mds, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatalf("list docs: %v", err)
	}
	rels := []string{"README.md", "BENCHMARKS.md"}
	for _, m := range mds {
		rel, err := filepath.Rel(root, m)
		if err != nil {
			t.Fatalf("docs page %s: %v", m, err)
		}
		rels = append(rels, filepath.ToSlash(rel))
	}
	var ps []*page
	for _, r := range rels {
		ps = append(ps, readPage(t, root, r))
	}
	return ps
}

var headingRE = regexp.MustCompile(`^(#{1,6})\s+(.*?)\s*#*\s*$`)

// section returns the prose lines of the section under the heading whose
// text is title, up to the next heading of the same or a higher level.
func (p *page) section(title string) []string {
	level := 0
	var out []string
	for i, l := range p.lines {
		m := headingRE.FindStringSubmatch(l)
		if m != nil && p.prose[i] {
			if level > 0 && len(m[1]) <= level {
				break
			}
			if level == 0 && m[2] == title {
				level = len(m[1])
				continue
			}
		}
		if level > 0 && p.prose[i] {
			out = append(out, l)
		}
	}
	return out
}

// tableRows returns the rows of the markdown tables among lines, as cells.
func tableRows(lines []string) [][]string {
	var rows [][]string
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if !strings.HasPrefix(l, "|") || strings.HasPrefix(l, "|---") {
			continue
		}
		// An escaped pipe (`a\|b`) stays inside its cell.
		cells := strings.Split(strings.ReplaceAll(strings.Trim(l, "|"), `\|`, "\x00"), "|")
		for i, c := range cells {
			cells[i] = strings.TrimSpace(strings.ReplaceAll(c, "\x00", "|"))
		}
		rows = append(rows, cells)
	}
	return rows
}

var codeSpanRE = regexp.MustCompile("`[^`]*`")

// proseText returns line i with its inline code spans blanked, or "" when
// the line is inside a fenced code block.
func (p *page) proseText(i int) string {
	if !p.prose[i] {
		return ""
	}
	return codeSpanRE.ReplaceAllString(p.lines[i], "``")
}

// anchors returns the anchors of the page's headings as GitHub makes them.
func (p *page) anchors() map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	for i, l := range p.lines {
		m := headingRE.FindStringSubmatch(l)
		if m == nil || !p.prose[i] {
			continue
		}
		a := slug(m[2])
		if n := seen[a]; n > 0 {
			out[a+"-"+strconv.Itoa(n)] = true
		} else {
			out[a] = true
		}
		seen[a]++
	}
	return out
}

// slug is GitHub's heading anchor: lower case, every character that is not
// a letter, a digit, a space, '-' or '_' dropped, spaces turned into '-'.
func slug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// linkRE finds inline links and images: [text](target) and ![alt](target).
var linkRE = regexp.MustCompile(`\]\(([^()\s]+)\)`)

// link is one link of a page.
type link struct {
	line   int
	target string
}

// links returns the page's inline links outside code.
func (p *page) links() []link {
	var out []link
	for i := range p.lines {
		for _, m := range linkRE.FindAllStringSubmatch(p.proseText(i), -1) {
			out = append(out, link{line: i + 1, target: m[1]})
		}
	}
	return out
}

func TestSlug(t *testing.T) {
	for heading, want := range map[string]string{
		"Real nodes: `weft lab up --kubelet`":     "real-nodes-weft-lab-up---kubelet",
		"What still differs from flannel v0.28.9": "what-still-differs-from-flannel-v0289",
		"A DaemonSet from flannel's source tree":  "a-daemonset-from-flannels-source-tree",
		"net-conf.json":                           "net-confjson",
		"Control plane: etcd":                     "control-plane-etcd",
	} {
		if got := slug(heading); got != want {
			t.Errorf("slug(%q) = %q, want %q", heading, got, want)
		}
	}
}

func TestTableRows(t *testing.T) {
	rows := tableRows([]string{"| a | b |", "|---|---|", "| `x\\|y` | z |", "not a row"})
	if len(rows) != 2 || rows[1][0] != "`x|y`" || rows[1][1] != "z" {
		t.Errorf("tableRows = %q", rows)
	}
}
