package iptables

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"unicode"

	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/internal/netfilter"
)

// Render returns the rules of chain as `iptables -S` prints them
// ("-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -j RETURN"), which is
// also valid iptables-restore input.
func Render(chain string, rules []netfilter.Rule) []string {
	out := make([]string, 0, len(rules))
	for _, r := range rules {
		out = append(out, "-A "+chain+RuleSpec(r))
	}
	return out
}

// RuleSpec renders one rule's matches and target, with a leading space.
func RuleSpec(r netfilter.Rule) string {
	s := ""
	if r.Mark != 0 {
		s += fmt.Sprintf(" -m mark --mark 0x%x/0x%x", r.Mark, r.Mark)
	}
	s += match("-s", r.Src) + match("-d", r.Dst)
	switch r.Verdict {
	case netfilter.Return:
		s += " -j RETURN"
	case netfilter.Accept:
		s += " -j ACCEPT"
	case netfilter.Masquerade:
		s += " -j MASQUERADE"
		if r.FullyRandom {
			s += " --random-fully"
		}
	}
	return s
}

func match(flag string, m netfilter.Match) string {
	switch {
	case m.Any():
		return ""
	case m.Not:
		return " ! " + flag + " " + m.Prefix.String()
	default:
		return " " + flag + " " + m.Prefix.String()
	}
}

func withoutFullyRandom(rules []netfilter.Rule) []netfilter.Rule {
	out := make([]netfilter.Rule, len(rules))
	for i, r := range rules {
		r.FullyRandom = false
		out[i] = r
	}
	return out
}

// fullyRandom reports whether MASQUERADE --random-fully works: iptables
// 1.6.2 or later and kernel 3.13 or later. The answer is kept per family;
// a failed check counts as "no" and is retried on the next Apply.
func (b *Backend) fullyRandom(ctx context.Context, bin string, f netfilter.Family) bool {
	if ok, known := b.random[f]; known {
		return ok
	}
	out, err := b.run.Run(ctx, nil, bin, "--version")
	if err != nil {
		b.log.Warn("cannot tell whether masquerading can use --random-fully", "binary", bin, "err", err)
		return false
	}
	var u unix.Utsname
	kernel := ""
	if unix.Uname(&u) == nil {
		kernel = unix.ByteSliceToString(u.Release[:])
	}
	ok := versionAtLeast(string(out), 1, 6, 2) && versionAtLeast(kernel, 3, 13, 0)
	if !ok {
		b.log.Info("masquerading without --random-fully: iptables or kernel too old",
			"binary", bin, "iptables", string(out), "kernel", kernel)
	}
	b.random[f] = ok
	return ok
}

// versionAtLeast reports whether the first dotted version in s (as in
// "iptables v1.8.9 (nf_tables)" or the kernel release "6.1.0-18-amd64") is
// at least major.minor.patch.
func versionAtLeast(s string, major, minor, patch int) bool {
	i := strings.IndexFunc(s, unicode.IsDigit)
	if i < 0 {
		return false
	}
	end := strings.IndexFunc(s[i:], func(r rune) bool { return r != '.' && !unicode.IsDigit(r) })
	if end >= 0 {
		s = s[i : i+end]
	} else {
		s = s[i:]
	}
	have := [3]int{}
	for n, part := range strings.SplitN(s, ".", 3) {
		have[n], _ = strconv.Atoi(part)
	}
	want := [3]int{major, minor, patch}
	for n := range 3 {
		if have[n] != want[n] {
			return have[n] > want[n]
		}
	}
	return true
}
