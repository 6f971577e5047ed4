//go:build linux

package chart_test

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/weft-net/weft/deploy/chart/charttest"
	"github.com/weft-net/weft/internal/backend/registry"
	"github.com/weft-net/weft/internal/backend/udp"
	"github.com/weft-net/weft/internal/backend/vxlan"
	"github.com/weft-net/weft/internal/backend/wireguard"
	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/version"
)

// valuesCase is a values file and what it must change in the chart's
// defaults: net-conf.json (the whole file, as JSON), the other objects
// (change), and what weft's own parsers read from the result (check).
type valuesCase struct {
	name    string
	values  string
	netConf string
	change  func(t *testing.T, want objects)
	check   func(t *testing.T, nc *config.NetConf)
	notes   string // a line the install notes must hold
}

// valuesCases are charttest.FlannelValues, each with its expectations, and
// the cases of weft's own values.
func valuesCases(t *testing.T) []valuesCase {
	t.Helper()
	exp := map[string]valuesCase{}
	for _, c := range flannelExpectations() {
		exp[c.name] = c
	}
	var out []valuesCase
	for _, s := range charttest.FlannelValues() {
		c, ok := exp[s.Name]
		if !ok {
			t.Fatalf("values set %q has no expectations here", s.Name)
		}
		c.values = s.Values
		delete(exp, s.Name)
		out = append(out, c)
	}
	for name := range exp {
		t.Errorf("expectations for %q, which charttest.FlannelValues lacks", name)
	}
	return append(out, weftValues()...)
}

// flannelExpectations are what each of charttest.FlannelValues changes.
func flannelExpectations() []valuesCase {
	return []valuesCase{
		{name: "vxlan with backendPort and mtu",
			netConf: `{"Network":"10.244.0.0/16","EnableNFTables":false,"Backend":{"Type":"vxlan","Port":4789,"VNI":4096,"GBP":true,"DirectRouting":true,"MTU":1400}}`,
			check: func(t *testing.T, nc *config.NetConf) {
				o, _, err := vxlan.ParseOptions(nc)
				if err != nil || o != (vxlan.Options{VNI: 4096, Port: 4789, GBP: true, DirectRouting: true, MTU: 1400}) {
					t.Errorf("vxlan options %+v, %v", o, err)
				}
			}},
		{name: "host-gw",
			netConf: `{"Network":"10.244.0.0/16","EnableNFTables":false,"Backend":{"Type":"host-gw"}}`},
		{name: "udp with backendPort",
			netConf: `{"Network":"10.244.0.0/16","EnableNFTables":false,"Backend":{"Type":"udp","Port":8300}}`,
			check: func(t *testing.T, nc *config.NetConf) {
				if o, _, err := udp.ParseNetConfOptions(nc); err != nil || o.Port != 8300 {
					t.Errorf("udp options %+v, %v", o, err)
				}
			}},
		{name: "wireguard",
			netConf: `{"Network":"10.244.0.0/16","IPv6Network":"fd00:10:244::/56","EnableIPv6":true,"EnableNFTables":false,` +
				`"Backend":{"Type":"wireguard","ListenPort":51830,"ListenPortV6":51831,"PSK":"` + charttest.PSK + `","MTU":1380,` +
				`"Mode":"separate","PersistentKeepaliveInterval":25}}`,
			check: func(t *testing.T, nc *config.NetConf) {
				o, _, err := wireguard.ParseOptions(nc)
				if err != nil || o.ListenPort != 51830 || o.ListenPortV6 != 51831 || o.MTU != 1380 || o.PSK != charttest.PSK ||
					o.Mode != wireguard.ModeSeparate || o.PersistentKeepaliveInterval != 25 {
					t.Errorf("wireguard options: %v, ports %d %d, MTU %d, mode %q, keepalive %d, PSK set %v", err,
						o.ListenPort, o.ListenPortV6, o.MTU, o.Mode, o.PersistentKeepaliveInterval, o.PSK != "")
				}
			}},
		{name: "dual-stack podCidrv6",
			netConf: `{"Network":"10.42.0.0/16","IPv6Network":"fd00:10:42::/56","EnableIPv6":true,"EnableNFTables":false,"Backend":{"Type":"vxlan"}}`,
			check: func(t *testing.T, nc *config.NetConf) {
				if nc.IPv4.Network != netip.MustParsePrefix("10.42.0.0/16") || !nc.IPv6.Enabled ||
					nc.IPv6.Network != netip.MustParsePrefix("fd00:10:42::/56") || nc.IPv6.SubnetLen != 64 {
					t.Errorf("families %+v %+v, want 10.42.0.0/16 and fd00:10:42::/56 (/64 subnets)", nc.IPv4, nc.IPv6)
				}
			}},
		{name: "IPv6 only",
			netConf: `{"EnableIPv4":false,"IPv6Network":"fd00:10:42::/56","EnableIPv6":true,"EnableNFTables":false,"Backend":{"Type":"vxlan"}}`,
			check: func(t *testing.T, nc *config.NetConf) {
				if nc.IPv4.Enabled || !nc.IPv6.Enabled {
					t.Errorf("IPv4 %v, IPv6 %v; want IPv6 only", nc.IPv4.Enabled, nc.IPv6.Enabled)
				}
			}},
		{name: "nftables",
			netConf: `{"Network":"10.244.0.0/16","EnableNFTables":true,"Backend":{"Type":"vxlan"}}`},
		{name: "extra flannel.args",
			change: func(t *testing.T, want objects) {
				pod := podSpec(t, want)
				container(t, pod, "kube-flannel")["args"] = list("--ip-masq", "--kube-subnet-mgr", "--iface=eth1",
					"--iptables-forward-rules=false", "--healthz-port=8081")
			}},
		{name: "custom image (a mirror of weft's)",
			change: func(t *testing.T, want objects) {
				pod := podSpec(t, want)
				for _, c := range []string{"install-cni-plugin", "install-cni", "kube-flannel"} {
					container(t, pod, c)["image"] = "registry.example.com/mirror/weft:" + version.Release
				}
				pod["imagePullSecrets"] = yamlValue(t, "[{name: mirror-pull}]")
			}},
		{name: "custom CNI plugin image",
			change: func(t *testing.T, want objects) {
				pod := podSpec(t, want)
				container(t, pod, "install-cni-plugin")["image"] = "registry.example.com/cni:v1"
			}},
		{name: "image_cni, the name before flannel v0.28",
			change: func(t *testing.T, want objects) {
				pod := podSpec(t, want)
				container(t, pod, "install-cni-plugin")["image"] = "registry.example.com/cni:v0"
			}},
		{name: "flannel's own images stay weft's",
			notes: "flannel.image names flannel's image (ghcr.io/flannel-io/flannel); weftd runs from weft's image ghcr.io/weft-net/weft:" +
				version.Release + " instead."},
		{name: "flannel.image.tag alone"}, // a tag of flannel's names no weft image: weft.image's
		{name: "tolerations and nodeSelector",
			change: func(t *testing.T, want objects) {
				pod := podSpec(t, want)
				pod["tolerations"] = yamlValue(t, "[{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}]")
				pod["nodeSelector"] = map[string]any{"eks.amazonaws.com/compute-type": "hybrid"}
			}},
		{name: "healthz off, the manifest's tolerations",
			change: func(t *testing.T, want objects) {
				pod := podSpec(t, want)
				// Back to kube-weft.yml's container and tolerations.
				c := container(t, pod, "kube-flannel")
				c["args"] = list("--ip-masq", "--kube-subnet-mgr")
				for _, k := range []string{"ports", "livenessProbe", "readinessProbe"} {
					delete(c, k)
				}
				pod["tolerations"] = yamlValue(t, "[{operator: Exists, effect: NoSchedule}]")
			}},
		{name: "healthz on another port",
			change: func(t *testing.T, want objects) {
				c := container(t, podSpec(t, want), "kube-flannel")
				c["args"] = list("--ip-masq", "--kube-subnet-mgr", "--healthz-port=9471")
				c["ports"] = yamlValue(t, "[{name: healthz, containerPort: 9471, protocol: TCP}]")
			}},
		{name: "skipCNIConfigInstallation and the CNI directories",
			change: func(t *testing.T, want objects) {
				pod := podSpec(t, want)
				pod["initContainers"] = pod["initContainers"].([]any)[:1]
				for _, v := range pod["volumes"].([]any) {
					v := v.(map[string]any)
					switch v["name"] {
					case "cni-plugin":
						v["hostPath"] = map[string]any{"path": "/var/lib/cni/bin"}
					case "cni":
						v["hostPath"] = map[string]any{"path": "/var/lib/cni/net.d"}
					}
				}
			}},
	}
}

// weftValues are cases of the values only weft has.
func weftValues() []valuesCase {
	return []valuesCase{
		{name: "weft's metrics annotations",
			values: "weft:\n  metrics:\n    podAnnotations: true\n",
			change: func(t *testing.T, want objects) {
				m(t, want[keyDaemonSet], "spec", "template", "metadata")["annotations"] = map[string]any{
					"prometheus.io/scrape": "true", "prometheus.io/port": "8081", "prometheus.io/path": "/metrics"}
			}},
		{name: "weft's image and pull policy",
			values: "weft:\n  image:\n    repository: registry.example.com/weft\n    tag: v9\n    pullPolicy: Never\n",
			change: func(t *testing.T, want objects) {
				pod := podSpec(t, want)
				for _, c := range []string{"install-cni-plugin", "install-cni", "kube-flannel"} {
					container(t, pod, c)["image"] = "registry.example.com/weft:v9"
					container(t, pod, c)["imagePullPolicy"] = "Never"
				}
			}},
	}
}

// TestFlannelValues renders each of flannel's documented values sets (and
// weft's own values) and
// compares every object with kube-weft.yml's (through the defaults'
// differences) plus exactly the change the values ask for; then weft's own
// parsers read the result: net-conf.json with its backend's options
// (without warnings), weftd's command line, the conflist.
func TestFlannelValues(t *testing.T) {
	for _, tc := range valuesCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			got, r := render(t, tc.values)
			want := expectedDefaults(t)
			if tc.netConf != "" {
				m(t, want[keyConfigMap], "data")["net-conf.json"] = tc.netConf
			}
			if tc.change != nil {
				tc.change(t, want)
			}
			compare(t, got, want)
			nc := checkNetConf(t, got)
			if tc.check != nil && nc != nil {
				tc.check(t, nc)
			}
			checkArgs(t, got)
			if tc.notes != "" && !strings.Contains(r.Notes, tc.notes) {
				t.Errorf("notes lack %q:\n%s", tc.notes, r.Notes)
			}
		})
	}
}

// checkNetConf parses the rendered net-conf.json as weftd does and validates
// its backend's options; it returns the result (nil after an error).
func checkNetConf(t *testing.T, objs objects) *config.NetConf {
	t.Helper()
	text, _ := m(t, objs[keyConfigMap], "data")["net-conf.json"].(string)
	nc, warnings, err := config.ParseNetConf([]byte(text))
	if err != nil {
		t.Errorf("weftd rejects net-conf.json: %v\n%s", err, text)
		return nil
	}
	w, known, err := registry.Default().Validate(nc)
	if !known || err != nil {
		t.Errorf("backend %q: known %v, %v", nc.Backend.Type, known, err)
		return nil
	}
	if warnings = append(warnings, w...); len(warnings) > 0 {
		t.Errorf("net-conf.json warnings %q\n%s", warnings, text)
	}
	return nc
}

// checkArgs parses weftd's rendered command line with weftd's own parser.
func checkArgs(t *testing.T, objs objects) {
	t.Helper()
	c := container(t, podSpec(t, objs), "kube-flannel")
	var args []string
	for _, a := range c["args"].([]any) {
		args = append(args, a.(string))
	}
	env := func(k string) (string, bool) {
		if k == "NODE_NAME" {
			return "n1", true
		}
		return "", false
	}
	o, err := config.ParseOptions(args, env, nil)
	if err != nil {
		t.Errorf("weftd rejects its arguments %q: %v", args, err)
		return
	}
	if !o.KubeSubnetMgr || !o.IPMasq {
		t.Errorf("arguments %q: kube-subnet-mgr %v, ip-masq %v", args, o.KubeSubnetMgr, o.IPMasq)
	}
	if js, _ := json.Marshal(c["command"]); string(js) != `["/usr/local/bin/weftd"]` {
		t.Errorf("command %s, want weftd", js)
	}
}

// TestBackendsAreWeftds: every backend weftd has renders and validates, and
// the chart names exactly weftd's backends when it refuses another.
func TestBackendsAreWeftds(t *testing.T) {
	names := registry.Default().Names()
	for _, b := range names {
		got, _ := render(t, "flannel:\n  backend: "+b+"\n")
		if nc := checkNetConf(t, got); nc != nil && nc.Backend.Type != b {
			t.Errorf("backend %s: net-conf.json has %q", b, nc.Backend.Type)
		}
	}
	_, err := renderErr(t, "flannel:\n  backend: aws-vpc\n")
	if want := `flannel.backend "aws-vpc": weft has the backends ` + strings.Join(names, ", "); err == nil ||
		!strings.Contains(err.Error(), want) {
		t.Errorf("backend aws-vpc: %v, want an error saying %q", err, want)
	}
}

// TestValuesWeftRefuses: values weft cannot honour fail the install with a
// message saying why.
func TestValuesWeftRefuses(t *testing.T) {
	for _, tc := range []struct{ values, want string }{
		{"flannel:\n  backendPort: \"84x2\"\n", `flannel.backendPort: want a whole number, not "84x2"`},
		{"flannel:\n  mtu: 1400.5\n", `flannel.mtu: want a whole number, not "1400.5"`},
		{"flannel:\n  GBP: \"yes\"\n", `flannel.GBP: want true or false, not "yes"`},
		{"podCidr: \"\"\n", "podCidr and podCidrv6 are both empty"},
		{"flannel:\n  cniConf: \"\"\n", "flannel.cniConf is empty"},
		{"flannel:\n  healthz:\n    port: 0\nweft:\n  metrics:\n    podAnnotations: true\n",
			"weft.metrics.podAnnotations needs flannel.healthz.port"},
	} {
		_, err := renderErr(t, tc.values)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("values %q: %v, want an error saying %q", tc.values, err, tc.want)
		}
	}
	// flannel's values.yaml as its chart ships it, netpol off: renders.
	_, err := renderErr(t, "netpol:\n  enabled: false\n  args: [\"--hostname-override=$(MY_NODE_NAME)\", \"--v=2\"]\n"+
		"  image:\n    repository: registry.k8s.io/networking/kube-network-policies\n    tag: v1.0.0\n")
	if err != nil {
		t.Errorf("netpol off: %v", err)
	}
}
