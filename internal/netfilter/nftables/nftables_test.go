package nftables

import (
	"net/netip"
	"testing"

	"github.com/weft-net/weft/internal/netfilter"
)

func TestRender(t *testing.T) {
	want := netfilter.Desired(netfilter.Config{Masquerade: true, Forward: true, FullyRandomDisable: true,
		Networks: []netfilter.Network{{
			Cluster: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.1.0/24")}}})[0]
	got := Render(want)
	golden := `table ip flannel-ipv4 {
	chain postrtg {
		type nat hook postrouting priority srcnat; policy accept;
		meta mark & 0x00004000 == 0x00004000 return
		ip saddr 10.244.1.0/24 ip daddr 10.244.0.0/16 return
		ip saddr 10.244.0.0/16 ip daddr 10.244.1.0/24 return
		ip saddr != 10.244.0.0/16 ip daddr 10.244.1.0/24 return
		ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade
		ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade
	}

	chain forward {
		type filter hook forward priority filter; policy accept;
		ip saddr 10.244.0.0/16 accept
		ip daddr 10.244.0.0/16 accept
	}
}
`
	if got != golden {
		t.Errorf("Render:\n%s\nwant:\n%s", got, golden)
	}
	want.Forward = nil
	if got := Render(want); len(normalize(got)) != 11 {
		t.Errorf("Render without forward rules:\n%s", got)
	}
}
