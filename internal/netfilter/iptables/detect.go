package iptables

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/weft-net/weft/internal/netfilter"
)

// Variant selection (--iptables-mode).
//
// iptables 1.8 comes in two variants that write to different kernel
// subsystems: "legacy" (the x_tables API) and "nft" (nf_tables through the
// iptables syntax). Rules of one variant do not see the other's: an ACCEPT in
// iptables-nft's FORWARD does not stop iptables-legacy's FORWARD policy DROP
// (Docker's) from dropping the packet. So weft's chains must be where the
// node's other rules (kubelet's, kube-proxy's, Docker's) are.
//
// flannel's image gets that from kubernetes-sigs/iptables-wrappers'
// iptables-wrapper, which on first use picks the variant by the rules the
// node already has. Detect makes the same choice in the same order (see its
// comment), without replacing binaries: the backend is just given the
// variant's names (iptables-legacy, ip6tables-legacy, ...). It reads the
// kernel only with the -save binaries and without `-t` for legacy, because
// `iptables-legacy -t TABLE` creates TABLE in the kernel when it is missing.

// Mode is --iptables-mode: which iptables variant weft's chains go in.
type Mode string

// The modes. ModeAuto is the default.
const (
	ModeAuto   Mode = "auto"   // pick the variant the node's rules are in, as iptables-wrapper does
	ModeLegacy Mode = "legacy" // iptables-legacy, ip6tables-legacy
	ModeNFT    Mode = "nft"    // iptables-nft, ip6tables-nft
)

// ParseMode returns the mode named s.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeAuto, ModeLegacy, ModeNFT:
		return m, nil
	}
	return "", fmt.Errorf("iptables mode %q: must be auto, legacy or nft", s)
}

// The variants' names as they appear in binary names.
const (
	variantLegacy = "legacy"
	variantNFT    = "nft"
)

// Choice is the iptables variant weft uses, and why.
type Choice struct {
	// Variant is "legacy" or "nft"; empty when neither variant's binaries
	// are installed, and the plain iptables and ip6tables are used.
	Variant string
	// Reason says why, in one line.
	Reason string
}

// Binary is the choice's IPv4 binary: iptables-legacy, iptables-nft or
// iptables.
func (c Choice) Binary() string { return variantBinary("iptables", c.Variant) }

// Options returns the backend options that use the choice's binaries.
func (c Choice) Options() Options {
	return Options{IPTables: c.Binary(), IP6Tables: variantBinary("ip6tables", c.Variant)}
}

func variantBinary(family, variant string) string {
	if variant == "" {
		return family
	}
	return family + "-" + variant
}

// Detect chooses the variant for mode. A forced mode is taken as it is: its
// binaries are needed when the rules are written, and a missing one is
// reported then. ModeAuto follows iptables-wrapper:
//
//  1. kubelet's KUBE-IPTABLES-HINT or KUBE-KUBELET-CANARY chain in
//     iptables-nft's mangle table (IPv4, then IPv6): nft;
//  2. either chain anywhere in iptables-legacy's rules (IPv4, then IPv6;
//     all tables, since `-t mangle` would create the legacy mangle table):
//     legacy;
//  3. otherwise legacy when it holds more rules ("-A" lines of both
//     families) than nft, else nft, the wrapper's default.
//
// Step 3 is the shell wrapper's (the iptables-wrappers repository before
// its Go rewrite); the Go wrapper in flannel v0.28's image goes from step 2
// straight to nft. The two differ only on a node without kubelet's chains
// whose legacy tables hold more rules, such as a host with Docker in legacy
// mode and no Kubernetes, where nft would put weft's FORWARD accept rules
// behind Docker's legacy FORWARD policy DROP.
//
// A save that fails counts as empty, as in the wrapper; but when ctx ends
// during detection, Detect returns an error rather than a choice made on
// cut-short output. When the chosen variant is not installed but the other
// is, the other is used; when neither is, the plain iptables and ip6tables.
func Detect(ctx context.Context, run netfilter.Runner, mode Mode) (Choice, error) {
	switch mode {
	case ModeLegacy, ModeNFT:
		return Choice{Variant: string(mode), Reason: "--iptables-mode=" + string(mode)}, nil
	case ModeAuto:
		c := detect(func(bin string, args ...string) ([]byte, error) {
			return run.Run(ctx, nil, bin, args...)
		})
		if err := ctx.Err(); err != nil { // the saves were cut short: no choice
			return Choice{}, fmt.Errorf("detect the iptables variant: %w", err)
		}
		return c, nil
	}
	_, err := ParseMode(string(mode))
	return Choice{}, err
}

// saveFunc runs an iptables -save binary and returns its output.
type saveFunc func(bin string, args ...string) ([]byte, error)

// saves runs each save command once and remembers which variants are
// installed (their IPv4 save binary exists).
type saves struct {
	run       saveFunc
	out       map[string]string
	installed map[string]bool
}

// get returns `<family>-<variant>-save [-t table]`, empty when it failed.
func (s *saves) get(family, variant, table string) string {
	bin := variantBinary(family, variant) + "-save"
	var args []string
	if table != "" {
		args = []string{"-t", table}
	}
	key := strings.Join(append([]string{bin}, args...), " ")
	if out, ok := s.out[key]; ok {
		return out
	}
	out, err := s.run(bin, args...)
	if family == "iptables" {
		s.installed[variant] = !errors.Is(err, exec.ErrNotFound)
	}
	if err != nil {
		out = nil
	}
	s.out[key] = string(out)
	return string(out)
}

// detect is Detect's ModeAuto over save.
func detect(save saveFunc) Choice {
	s := &saves{run: save, out: map[string]string{}, installed: map[string]bool{}}
	pick, reason := decide(s)
	other := map[string]string{variantLegacy: variantNFT, variantNFT: variantLegacy}[pick]
	switch {
	case s.installed[pick]:
		return Choice{Variant: pick, Reason: reason}
	case s.installed[other]:
		return Choice{Variant: other, Reason: fmt.Sprintf("%s, but iptables-%s is not installed", reason, pick)}
	}
	return Choice{Reason: "neither iptables-legacy nor iptables-nft is installed"}
}

// decide is the wrapper's choice, before looking at what is installed.
func decide(s *saves) (variant, reason string) {
	for _, fam := range []string{"iptables", "ip6tables"} {
		if c := kubeletChain(s.get(fam, variantNFT, "mangle")); c != "" {
			return variantNFT, fmt.Sprintf("kubelet's %s chain is in %s-nft's mangle table", c, fam)
		}
	}
	for _, fam := range []string{"iptables", "ip6tables"} {
		if c := kubeletChain(s.get(fam, variantLegacy, "")); c != "" {
			return variantLegacy, fmt.Sprintf("kubelet's %s chain is in %s-legacy's rules", c, fam)
		}
	}
	legacy := countRules(s.get("iptables", variantLegacy, "")) + countRules(s.get("ip6tables", variantLegacy, ""))
	nft := countRules(s.get("iptables", variantNFT, "")) + countRules(s.get("ip6tables", variantNFT, ""))
	if legacy > nft {
		return variantLegacy, fmt.Sprintf("no kubelet chain in either variant, and iptables-legacy holds more rules (%d against %d in iptables-nft)", legacy, nft)
	}
	return variantNFT, fmt.Sprintf("no kubelet chain in either variant, and iptables-legacy holds no more rules than iptables-nft (%d against %d): the default", legacy, nft)
}

// kubeletChain returns the first of kubelet's chains that mark the variant
// the node uses (KUBE-IPTABLES-HINT, made for this purpose, and the older
// KUBE-KUBELET-CANARY, both in the mangle table) that a save output
// declares, or "".
func kubeletChain(save string) string {
	for _, line := range strings.Split(save, "\n") {
		for _, c := range []string{"KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"} {
			if strings.HasPrefix(line, ":"+c) {
				return c
			}
		}
	}
	return ""
}

// countRules counts the rules ("-A ..." lines) of a save output.
func countRules(save string) int {
	n := 0
	for _, line := range strings.Split(save, "\n") {
		if strings.HasPrefix(line, "-") {
			n++
		}
	}
	return n
}

// Holding returns the variants whose saved rules (either family) declare
// weft's chains: where a node that changed variants keeps stale chains. It
// reads with the -save binaries only, so it creates no table. The plain
// iptables is considered only when neither named variant is installed
// (otherwise it is one of them).
func Holding(ctx context.Context, run netfilter.Runner) []Choice {
	s := &saves{run: func(bin string, args ...string) ([]byte, error) {
		return run.Run(ctx, nil, bin, args...)
	}, out: map[string]string{}, installed: map[string]bool{}}
	var out []Choice
	for _, v := range []string{variantLegacy, variantNFT, ""} {
		if v == "" && (s.installed[variantLegacy] || s.installed[variantNFT]) {
			break
		}
		if holdsOwnChains(s.get("iptables", v, "")) || holdsOwnChains(s.get("ip6tables", v, "")) {
			out = append(out, Choice{Variant: v, Reason: "weft's chains are in " + variantBinary("iptables", v)})
		}
	}
	return out
}

// holdsOwnChains reports whether a save output declares weft's chains.
func holdsOwnChains(save string) bool {
	for _, line := range strings.Split(save, "\n") {
		if strings.HasPrefix(line, ":"+MasqChain+" ") || strings.HasPrefix(line, ":"+ForwardChain+" ") {
			return true
		}
	}
	return false
}
