package netfilter_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestForeignRulesSurvive: rules, chains and tables that are not weft's stay
// through Set, a config change, a resync and Cleanup.
func TestForeignRulesSurvive(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			e := newEnv(t, m, time.Hour)
			ipt := "iptables"
			if m.name != "nftables" {
				ipt = m.name
			}
			e.sh(t, ipt, "-t", "nat", "-A", "POSTROUTING", "-s", "192.0.2.1/32", "-j", "ACCEPT")
			e.sh(t, ipt, "-t", "filter", "-A", "FORWARD", "-d", "192.0.2.2/32", "-j", "DROP")
			e.sh(t, ipt, "-t", "nat", "-N", "KUBE-POSTROUTING")
			e.sh(t, ipt, "-t", "nat", "-A", "KUBE-POSTROUTING", "-j", "MASQUERADE")
			e.sh(t, "nft", "add table inet foreign")
			e.sh(t, "nft", "add chain inet foreign fchain { type filter hook forward priority 0; policy accept; }")
			e.sh(t, "nft", "add rule inet foreign fchain ip saddr 10.244.0.0/16 counter accept")
			foreign := func() string {
				return saveTable(t, e.ns, ipt, "nat") + saveTable(t, e.ns, ipt, "filter") +
					e.sh(t, "nft", "list", "table", "inet", "foreign")
			}
			strip := func(s string) string { // drop weft's own lines
				var keep []string
				for _, l := range strings.Split(s, "\n") {
					if !strings.Contains(l, "FLANNEL-") {
						keep = append(keep, l)
					}
				}
				return strings.Join(keep, "\n")
			}
			before := strip(foreign())
			changed := testCfg()
			changed.Forward = false
			e.set(t, testCfg())
			e.set(t, changed)
			e.set(t, testCfg())
			if err := e.syncer.Resync(t.Context()); err != nil {
				t.Fatal(err)
			}
			if err := e.syncer.Cleanup(t.Context()); err != nil {
				t.Fatal(err)
			}
			if after := strip(foreign()); after != before {
				t.Errorf("foreign rules changed:\n%s\nwant:\n%s", after, before)
			}
		})
	}
}

// TestUpgradeFromFlannel: a node that ran flannel has its chains or tables
// (same names, other rule text) replaced, not duplicated.
func TestUpgradeFromFlannel(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			e := newEnv(t, m, time.Hour)
			if m.name == "nftables" {
				file := filepath.Join(t.TempDir(), "flannel.nft")
				if err := os.WriteFile(file, []byte(flannelNFT), 0o600); err != nil {
					t.Fatal(err)
				}
				e.sh(t, "nft", "-f", file)
			} else {
				for _, args := range flannelIPTables() {
					e.sh(t, append([]string{m.name}, args...)...)
				}
			}
			e.set(t, testCfg())
			e.check(t, testCfg())
		})
	}
}

// flannelIPTables returns flannel-style IPv4 rules (the same chain names, a
// comment on every rule, "! -s P -d P" as the fourth rule, the jump twice)
// as iptables argument lists.
func flannelIPTables() [][]string {
	c := "-m comment --comment flanneld_masq"
	rules := []string{
		"-t nat -N FLANNEL-POSTRTG",
		"-t nat -I POSTROUTING 1 " + c + " -j FLANNEL-POSTRTG",
		"-t nat -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 " + c + " -j RETURN",
		"-t nat -A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 " + c + " -j RETURN",
		"-t nat -A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.1.0/24 " + c + " -j RETURN",
		"-t nat -A FLANNEL-POSTRTG ! -s 10.244.1.0/24 -d 10.244.1.0/24 " + c + " -j RETURN",
		"-t nat -A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 " + c + " -j MASQUERADE --random-fully",
		"-t nat -A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 " + c + " -j MASQUERADE --random-fully",
		// flannel's jump twice, as after two racing flanneld starts.
		"-t nat -A POSTROUTING " + c + " -j FLANNEL-POSTRTG",
		"-t filter -N FLANNEL-FWD",
		"-t filter -I FORWARD 1 -m comment --comment flanneld_forward -j FLANNEL-FWD",
		"-t filter -A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment flanneld_forward -j ACCEPT",
		"-t filter -A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment flanneld_forward -j ACCEPT",
	}
	out := make([][]string, len(rules))
	for i, r := range rules {
		for _, f := range strings.Fields(r) {
			out[i] = append(out[i], strings.ReplaceAll(f, "_", " "))
		}
	}
	return out
}

// flannelNFT is a flannel-style IPv4 table: the same table and chain names,
// with comments and rule text that differ from weft's.
const flannelNFT = `table ip flannel-ipv4 {
	comment "rules for flannel-ipv4"
	chain postrtg {
		comment "chain to manage traffic masquerading by flannel"
		type nat hook postrouting priority srcnat; policy accept;
		meta mark 0x4000 return
		ip saddr 10.244.1.0/24 ip daddr 10.244.0.0/16 return
		ip saddr 10.244.0.0/16 ip daddr 10.244.1.0/24 return
		ip saddr != 10.244.1.0/24 ip daddr 10.244.1.0/24 return
		ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random
		ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random
	}
	chain forward {
		comment "chain to accept flannel traffic"
		type filter hook forward priority filter; policy accept;
		ip saddr 10.244.0.0/16 accept
		ip daddr 10.244.0.0/16 accept
	}
}
`
