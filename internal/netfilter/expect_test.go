package netfilter_test

import (
	"strings"

	"github.com/weft-net/weft/internal/netfilter"
)

// The expectations below are written by hand from SPEC "Masquerade and
// forwarding", independently of the renderers they check.

// network returns cfg's network of family f.
func network(cfg netfilter.Config, f netfilter.Family) (netfilter.Network, bool) {
	for _, n := range cfg.Networks {
		if netfilter.FamilyOf(n.Cluster) == f {
			return n, true
		}
	}
	return netfilter.Network{}, false
}

func fill(tmpl string, cfg netfilter.Config, n netfilter.Network, f netfilter.Family) string {
	mc, rnd, rndNFT := "224.0.0.0/4", " --random-fully", " fully-random"
	if f == netfilter.IPv6 {
		mc = "ff00::/8"
	}
	if cfg.FullyRandomDisable {
		rnd, rndNFT = "", ""
	}
	return strings.NewReplacer("{C}", n.Cluster.String(), "{P}", n.Subnet.String(), "{MC}", mc,
		"{RND}", rnd, "{FR}", rndNFT).Replace(tmpl)
}

const iptMasq = `:FLANNEL-POSTRTG - [0:0]
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -j RETURN
-A FLANNEL-POSTRTG -s {P} -d {C} -j RETURN
-A FLANNEL-POSTRTG -s {C} -d {P} -j RETURN
-A FLANNEL-POSTRTG ! -s {C} -d {P} -j RETURN
-A FLANNEL-POSTRTG -s {C} ! -d {MC} -j MASQUERADE{RND}
-A FLANNEL-POSTRTG ! -s {C} -d {C} -j MASQUERADE{RND}
`

const iptForward = `:FLANNEL-FWD - [0:0]
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A FLANNEL-FWD -s {C} -j ACCEPT
-A FLANNEL-FWD -d {C} -j ACCEPT
`

// expectIPTables is what iptablesOurs must print for cfg.
func expectIPTables(cfg netfilter.Config) string {
	var b strings.Builder
	for _, f := range netfilter.Families() {
		bin := "iptables"
		if f == netfilter.IPv6 {
			bin = "ip6tables"
		}
		n, ok := network(cfg, f)
		b.WriteString("# " + bin + " nat\n")
		if ok && cfg.Masquerade {
			b.WriteString(fill(iptMasq, cfg, n, f))
		}
		b.WriteString("# " + bin + " filter\n")
		if ok && cfg.Forward {
			b.WriteString(fill(iptForward, cfg, n, f))
		}
	}
	return b.String()
}

const nftMasq = `chain postrtg {
type nat hook postrouting priority srcnat; policy accept;
meta mark & 0x00004000 == 0x00004000 return
{F} saddr {P} {F} daddr {C} return
{F} saddr {C} {F} daddr {P} return
{F} saddr != {C} {F} daddr {P} return
{F} saddr {C} {F} daddr != {MC} masquerade{FR}
{F} saddr != {C} {F} daddr {C} masquerade{FR}
}
`

const nftForward = `chain forward {
type filter hook forward priority filter; policy accept;
{F} saddr {C} accept
{F} daddr {C} accept
}
`

// expectNFT is what nftOurs must print for cfg.
func expectNFT(cfg netfilter.Config) string {
	var b strings.Builder
	for _, f := range netfilter.Families() {
		fam := map[netfilter.Family]string{netfilter.IPv4: "ip", netfilter.IPv6: "ip6"}[f]
		n, ok := network(cfg, f)
		if !ok || (!cfg.Masquerade && !cfg.Forward) {
			continue
		}
		b.WriteString("table " + fam + " flannel-" + f.String() + " {\n")
		if cfg.Masquerade {
			b.WriteString(strings.ReplaceAll(fill(nftMasq, cfg, n, f), "{F}", fam))
		}
		if cfg.Forward {
			b.WriteString(strings.ReplaceAll(fill(nftForward, cfg, n, f), "{F}", fam))
		}
		b.WriteString("}\n")
	}
	return b.String()
}
