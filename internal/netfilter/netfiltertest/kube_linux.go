package netfiltertest

import (
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// KubeNodeRules is an iptables-restore script (for --noflush) with what
// kubelet and kube-proxy in iptables mode put on a node: kubelet's
// KUBE-IPTABLES-HINT and KUBE-KUBELET-CANARY chains in the mangle table, and
// kube-proxy's service, masquerade and forward chains with their jumps.
const KubeNodeRules = `*mangle
:KUBE-IPTABLES-HINT - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
COMMIT
*filter
:KUBE-FORWARD - [0:0]
:KUBE-SERVICES - [0:0]
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -m comment --comment "kubernetes forwarding rules" -j ACCEPT
COMMIT
`

// VariantBinaries are the binaries of both iptables variants, for
// RequireRoot.
func VariantBinaries() []string {
	var out []string
	for _, fam := range []string{"iptables", "ip6tables"} {
		for _, v := range []string{"-legacy", "-nft"} {
			for _, sfx := range []string{"", "-save", "-restore"} {
				out = append(out, fam+v+sfx)
			}
		}
	}
	return out
}

// Restore loads script into ns with `<bin>-restore --noflush` (bin is e.g.
// iptables-legacy) and fails t when it fails.
func Restore(t testing.TB, ns, bin, script string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, bin+"-restore", "-w", "5", "--noflush")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s-restore in %s: %v: %s", bin, ns, err, out)
	}
}

// OwnChains returns weft's chains (FLANNEL-*) that `<bin>-save` lists in ns
// for both families (bin is e.g. iptables-legacy; ip6tables-legacy is read
// too), as "iptables nat FLANNEL-POSTRTG" lines.
func OwnChains(t testing.TB, ns, bin string) []string {
	t.Helper()
	var out []string
	for _, b := range []string{bin, strings.Replace(bin, "iptables", "ip6tables", 1)} {
		table := ""
		for _, line := range strings.Split(MustRun(t, "ip", "netns", "exec", ns, b+"-save"), "\n") {
			switch {
			case strings.HasPrefix(line, "*"):
				table = line[1:]
			case strings.HasPrefix(line, ":FLANNEL-"):
				out = append(out, strings.SplitN(b, "-", 2)[0]+" "+table+" "+strings.Fields(line[1:])[0])
			}
		}
	}
	return out
}

// PolicyPackets returns the packet counter of a built-in chain's policy
// (packets the policy decided) in ns, read with `<bin>-save -c -t table`.
func PolicyPackets(t testing.TB, ns, bin, table, chain string) int {
	t.Helper()
	save := MustRun(t, "ip", "netns", "exec", ns, bin+"-save", "-c", "-t", table)
	m := regexp.MustCompile(`(?m)^:` + regexp.QuoteMeta(chain) + ` \S+ \[(\d+):\d+\]$`).FindStringSubmatch(save)
	if m == nil {
		t.Fatalf("%s-save -t %s in %s lists no chain %s:\n%s", bin, table, ns, chain, save)
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		t.Fatal(err)
	}
	return n
}
