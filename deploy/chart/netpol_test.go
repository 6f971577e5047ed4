package chart_test

import (
	"testing"

	"github.com/weft-net/weft/deploy"
)

// TestNetpolIsTheNetpolManifest: netpol.enabled (flannel's chart's switch
// for its kube-network-policies sidecar) renders kube-weft-netpol.yml's
// objects, weftd's --network-policy and the read rights on pods,
// namespaces and networkpolicies, with the chart's usual differences from
// the manifest; --network-policy already in flannel.args is not repeated.
func TestNetpolIsTheNetpolManifest(t *testing.T) {
	want := parseObjects(t, "kube-weft-netpol.yml", deploy.NetpolManifest)
	for _, d := range chartDefaults() {
		d.apply(t, want)
	}
	got, _ := render(t, "netpol:\n  enabled: true\n")
	compare(t, got, want)
	got, _ = render(t, "netpol:\n  enabled: true\nflannel:\n  args: [--ip-masq, --kube-subnet-mgr, --network-policy]\n")
	compare(t, got, want)
}
