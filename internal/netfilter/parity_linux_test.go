package netfilter_test

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestParity proves that iptables mode and nftables mode install the same
// rules in the same order: both kernel listings are reduced to one neutral
// form ("postrtg: saddr != C daddr P return") and compared, per family.
func TestParity(t *testing.T) {
	ipt, nft := iptablesMode("iptables"), nftMode()
	cfg := testCfg()
	ie, ne := newEnv(t, ipt, time.Hour), newEnv(t, nft, time.Hour)
	ie.set(t, cfg)
	ne.set(t, cfg)
	for _, fam := range [][3]string{{"iptables", "ip", "flannel-ipv4"}, {"ip6tables", "ip6", "flannel-ipv6"}} {
		var fromIPT []string
		for _, table := range []string{"nat", "filter"} {
			for _, line := range strings.Split(saveTable(t, ie.ns, fam[0], table), "\n") {
				if strings.HasPrefix(line, "-A FLANNEL-") {
					fromIPT = append(fromIPT, neutralIPT(t, line))
				}
			}
		}
		fromNFT := neutralNFT(t, ne.sh(t, "nft", "list", "table", fam[1], fam[2]))
		if !slices.Equal(fromIPT, fromNFT) {
			t.Errorf("%s: iptables mode\n  %s\nnftables mode\n  %s", fam[0],
				strings.Join(fromIPT, "\n  "), strings.Join(fromNFT, "\n  "))
		}
		if len(fromIPT) != 8 {
			t.Errorf("%s: %d rules, want 6 masquerade + 2 forward", fam[0], len(fromIPT))
		}
	}
}

// neutralIPT reduces an iptables-save rule of weft's chains.
func neutralIPT(t *testing.T, line string) string {
	f := strings.Fields(line)
	chain := map[string]string{"FLANNEL-POSTRTG": "postrtg", "FLANNEL-FWD": "forward"}[f[1]]
	out := []string{chain + ":"}
	not := false
	for i := 2; i < len(f); i++ {
		switch tok := f[i]; tok {
		case "!":
			not = true
			continue
		case "-m":
			i++ // the match module's name; its options follow
		case "--mark":
			out = append(out, "mark", f[i+1])
			i++
		case "-s", "-d":
			out = append(out, map[string]string{"-s": "saddr", "-d": "daddr"}[tok])
			if not {
				out = append(out, "!=")
			}
			out = append(out, f[i+1])
			i++
		case "-j":
			out = append(out, strings.ToLower(f[i+1]))
			i++
		case "--random-fully":
			out = append(out, "fully-random")
		default:
			t.Fatalf("iptables rule %q: unexpected %q", line, tok)
		}
		not = false
	}
	return strings.Join(out, " ")
}

// neutralNFT reduces the rules of `nft list table` output.
func neutralNFT(t *testing.T, listing string) []string {
	var rules []string
	chain := ""
	for _, line := range strings.Split(listing, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 0 || f[0] == "}" || f[0] == "table" || f[0] == "type":
		case f[0] == "chain":
			chain = f[1]
		default:
			rules = append(rules, neutralNFTRule(t, chain, f))
		}
	}
	return rules
}

func neutralNFTRule(t *testing.T, chain string, f []string) string {
	out := []string{chain + ":"}
	for i := 0; i < len(f); i++ {
		switch tok := f[i]; tok {
		case "ip", "ip6":
		case "meta": // meta mark & 0x00004000 == 0x00004000
			if i+5 >= len(f) || f[i+1] != "mark" || f[i+2] != "&" || f[i+4] != "==" {
				t.Fatalf("nft rule %q: unexpected meta match", strings.Join(f, " "))
			}
			mask, _ := strconv.ParseUint(f[i+3], 0, 32)
			val, _ := strconv.ParseUint(f[i+5], 0, 32)
			out = append(out, "mark", "0x"+strconv.FormatUint(val, 16)+"/0x"+strconv.FormatUint(mask, 16))
			i += 5
		case "saddr", "daddr", "!=", "return", "accept", "masquerade", "fully-random":
			out = append(out, tok)
		default:
			if strings.Contains(tok, "/") {
				out = append(out, tok)
				continue
			}
			t.Fatalf("nft rule %q: unexpected %q", strings.Join(f, " "), tok)
		}
	}
	return strings.Join(out, " ")
}
