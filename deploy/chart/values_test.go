//go:build linux

package chart_test

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/weft-net/weft/internal/backend/registry"
	"github.com/weft-net/weft/internal/backend/udp"
	"github.com/weft-net/weft/internal/backend/vxlan"
	"github.com/weft-net/weft/internal/backend/wireguard"
	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/version"
)

// testPSK is a wireguard pre-shared key (base64 of 32 bytes) for the tests.
const testPSK = "q1p3bXh0c2V0ZXN0a2V5Zm9yd2VmdHMgY2hhcnQgdGU="

// valuesCase is a values file written for flannel's chart and what it must
// change in the chart's defaults: net-conf.json (the whole file, as JSON),
// the other objects (change), and what weft's own parsers read from the
// result (check).
type valuesCase struct {
	name    string
	values  string
	netConf string
	change  func(t *testing.T, want objects)
	check   func(t *testing.T, nc *config.NetConf)
	notes   string // a line the install notes must hold
}

// flannelValues are the value sets flannel's chart documents (its
// values.yaml's keys, the backends' options, dual-stack, arguments, images,
// scheduling), each as a user of flannel's chart writes it.
func flannelValues() []valuesCase {
	return []valuesCase{
		{name: "vxlan with backendPort and mtu",
			values:  "flannel:\n  backend: vxlan\n  backendPort: 4789\n  mtu: 1400\n  vni: 4096\n  directRouting: true\n  GBP: true\n",
			netConf: `{"Network":"10.244.0.0/16","EnableNFTables":false,"Backend":{"Type":"vxlan","Port":4789,"VNI":4096,"GBP":true,"DirectRouting":true,"MTU":1400}}`,
			check: func(t *testing.T, nc *config.NetConf) {
				o, _, err := vxlan.ParseOptions(nc)
				if err != nil || o != (vxlan.Options{VNI: 4096, Port: 4789, GBP: true, DirectRouting: true, MTU: 1400}) {
					t.Errorf("vxlan options %+v, %v", o, err)
				}
			}},
		{name: "host-gw", values: "flannel:\n  backend: host-gw\n",
			netConf: `{"Network":"10.244.0.0/16","EnableNFTables":false,"Backend":{"Type":"host-gw"}}`},
		{name: "udp with backendPort", values: "flannel:\n  backend: udp\n  backendPort: 8300\n",
			netConf: `{"Network":"10.244.0.0/16","EnableNFTables":false,"Backend":{"Type":"udp","Port":8300}}`,
			check: func(t *testing.T, nc *config.NetConf) {
				if o, _, err := udp.ParseNetConfOptions(nc); err != nil || o.Port != 8300 {
					t.Errorf("udp options %+v, %v", o, err)
				}
			}},
		{name: "wireguard",
			values: "podCidrv6: fd00:10:244::/56\nflannel:\n  backend: wireguard\n  backendPort: 51830\n  backendPortv6: 51831\n" +
				"  mtu: 1380\n  psk: " + testPSK + "\n  tunnelMode: separate\n  keepaliveInterval: 25\n",
			netConf: `{"Network":"10.244.0.0/16","IPv6Network":"fd00:10:244::/56","EnableIPv6":true,"EnableNFTables":false,` +
				`"Backend":{"Type":"wireguard","ListenPort":51830,"ListenPortV6":51831,"PSK":"` + testPSK + `","MTU":1380,` +
				`"Mode":"separate","PersistentKeepaliveInterval":25}}`,
			check: func(t *testing.T, nc *config.NetConf) {
				o, _, err := wireguard.ParseOptions(nc)
				if err != nil || o.ListenPort != 51830 || o.ListenPortV6 != 51831 || o.MTU != 1380 || o.PSK != testPSK ||
					o.Mode != wireguard.ModeSeparate || o.PersistentKeepaliveInterval != 25 {
					t.Errorf("wireguard options: %v, ports %d %d, MTU %d, mode %q, keepalive %d, PSK set %v", err,
						o.ListenPort, o.ListenPortV6, o.MTU, o.Mode, o.PersistentKeepaliveInterval, o.PSK != "")
				}
			}},
		{name: "dual-stack podCidrv6", values: "podCidr: 10.42.0.0/16\npodCidrv6: fd00:10:42::/56\n",
			netConf: `{"Network":"10.42.0.0/16","IPv6Network":"fd00:10:42::/56","EnableIPv6":true,"EnableNFTables":false,"Backend":{"Type":"vxlan"}}`,
			check: func(t *testing.T, nc *config.NetConf) {
				if nc.IPv4.Network != netip.MustParsePrefix("10.42.0.0/16") || !nc.IPv6.Enabled ||
					nc.IPv6.Network != netip.MustParsePrefix("fd00:10:42::/56") || nc.IPv6.SubnetLen != 64 {
					t.Errorf("families %+v %+v, want 10.42.0.0/16 and fd00:10:42::/56 (/64 subnets)", nc.IPv4, nc.IPv6)
				}
			}},
		{name: "IPv6 only", values: "podCidr: \"\"\npodCidrv6: fd00:10:42::/56\n",
			netConf: `{"EnableIPv4":false,"IPv6Network":"fd00:10:42::/56","EnableIPv6":true,"EnableNFTables":false,"Backend":{"Type":"vxlan"}}`,
			check: func(t *testing.T, nc *config.NetConf) {
				if nc.IPv4.Enabled || !nc.IPv6.Enabled {
					t.Errorf("IPv4 %v, IPv6 %v; want IPv6 only", nc.IPv4.Enabled, nc.IPv6.Enabled)
				}
			}},
		{name: "nftables", values: "flannel:\n  enableNFTables: true\n",
			netConf: `{"Network":"10.244.0.0/16","EnableNFTables":true,"Backend":{"Type":"vxlan"}}`},
		{name: "extra flannel.args",
			values: "flannel:\n  args:\n  - --ip-masq\n  - --kube-subnet-mgr\n  - --iface=eth1\n  - --iptables-forward-rules=false\n",
			change: func(t *testing.T, want objects) {
				pod := podSpec(t, want)
				container(t, pod, "kube-flannel")["args"] = list("--ip-masq", "--kube-subnet-mgr", "--iface=eth1",
					"--iptables-forward-rules=false", "--healthz-port=8081")
			}},
		{name: "custom image (a mirror of weft's)",
			values: "global:\n  imagePullSecrets:\n  - name: mirror-pull\nflannel:\n  image:\n    repository: registry.example.com/mirror/weft\n" +
				"    tag: \"" + version.Release + "\"\n",
			change: func(t *testing.T, want objects) {
				pod := podSpec(t, want)
				for _, c := range []string{"install-cni-plugin", "install-cni", "kube-flannel"} {
					container(t, pod, c)["image"] = "registry.example.com/mirror/weft:" + version.Release
				}
				pod["imagePullSecrets"] = yamlValue(t, "[{name: mirror-pull}]")
			}},
		{name: "custom CNI plugin image",
			values: "flannel:\n  flannel_cni:\n    image:\n      repository: registry.example.com/cni\n      tag: v1\n",
			change: func(t *testing.T, want objects) {
				pod := podSpec(t, want)
				container(t, pod, "install-cni-plugin")["image"] = "registry.example.com/cni:v1"
			}},
		{name: "image_cni, the name before flannel v0.28",
			values: "flannel:\n  image_cni:\n    repository: registry.example.com/cni\n    tag: v0\n",
			change: func(t *testing.T, want objects) {
				pod := podSpec(t, want)
				container(t, pod, "install-cni-plugin")["image"] = "registry.example.com/cni:v0"
			}},
		{name: "flannel's own images stay weft's",
			values: "flannel:\n  image:\n    repository: ghcr.io/flannel-io/flannel\n    tag: v0.28.9\n  flannel_cni:\n    image:\n" +
				"      repository: ghcr.io/flannel-io/flannel-cni-plugin\n      tag: v1.9.1-flannel2\n",
			notes: "flannel.image names flannel's image (ghcr.io/flannel-io/flannel); weftd runs from weft's image ghcr.io/weft-net/weft:" +
				version.Release + " instead."},
		{name: "tolerations and nodeSelector",
			values: "flannel:\n  tolerations:\n  - key: node-role.kubernetes.io/control-plane\n    operator: Exists\n    effect: NoSchedule\n" +
				"  nodeSelector:\n    eks.amazonaws.com/compute-type: hybrid\n",
			change: func(t *testing.T, want objects) {
				pod := podSpec(t, want)
				pod["tolerations"] = yamlValue(t, "[{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}]")
				pod["nodeSelector"] = map[string]any{"eks.amazonaws.com/compute-type": "hybrid"}
			}},
		{name: "healthz off, the manifest's tolerations",
			values: "flannel:\n  healthz:\n    port: 0\n  tolerations:\n  - operator: Exists\n    effect: NoSchedule\n",
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
		{name: "healthz on another port, with weft's metrics annotations",
			values: "flannel:\n  healthz:\n    port: 9471\nweft:\n  metrics:\n    podAnnotations: true\n",
			change: func(t *testing.T, want objects) {
				pod := podSpec(t, want)
				c := container(t, pod, "kube-flannel")
				c["args"] = list("--ip-masq", "--kube-subnet-mgr", "--healthz-port=9471")
				c["ports"] = yamlValue(t, "[{name: healthz, containerPort: 9471, protocol: TCP}]")
				m(t, want[keyDaemonSet], "spec", "template", "metadata")["annotations"] = map[string]any{
					"prometheus.io/scrape": "true", "prometheus.io/port": "9471", "prometheus.io/path": "/metrics"}
			}},
		{name: "skipCNIConfigInstallation and the CNI directories",
			values: "flannel:\n  skipCNIConfigInstallation: true\n  cniBinDir: /var/lib/cni/bin\n  cniConfDir: /var/lib/cni/net.d\n",
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

// TestFlannelValues renders each of flannel's documented values sets and
// compares every object with kube-weft.yml's (through the defaults'
// differences) plus exactly the change the values ask for; then weft's own
// parsers read the result: net-conf.json with its backend's options
// (without warnings), weftd's command line, the conflist.
func TestFlannelValues(t *testing.T) {
	for _, tc := range flannelValues() {
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
	o, err := config.ParseOptions(args, env)
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
// message saying why; netpol.enabled first (weft does not enforce
// NetworkPolicy: the policies would silently do nothing).
func TestValuesWeftRefuses(t *testing.T) {
	for _, tc := range []struct{ values, want string }{
		{"netpol:\n  enabled: true\n", "netpol.enabled: weft does not enforce NetworkPolicy yet"},
		{"flannel:\n  backendPort: \"84x2\"\n", `flannel.backendPort: want a whole number, not "84x2"`},
		{"flannel:\n  mtu: 1400.5\n", `flannel.mtu: want a whole number, not "1400.5"`},
		{"flannel:\n  GBP: \"yes\"\n", `flannel.GBP: want true or false, not "yes"`},
		{"podCidr: \"\"\n", "podCidr and podCidrv6 are both empty"},
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
