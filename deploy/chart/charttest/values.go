package charttest

import "github.com/weft-net/weft/internal/version"

// PSK is a wireguard pre-shared key (base64 of 32 bytes) in FlannelValues.
const PSK = "q1p3bXh0c2V0ZXN0a2V5Zm9yd2VmdHMgY2hhcnQgdGU="

// ValuesSet is a values file written for flannel's chart.
type ValuesSet struct {
	Name   string
	Values string
}

// FlannelValues are the values sets of flannel's chart (flannel/flannel
// v0.28.9: its values.yaml's keys, as its users write them) that the chart's
// tests render: each backend with its options, dual-stack and IPv6-only
// networks, nftables, extra arguments, images (a mirror, flannel's own, the
// CNI plugin's under both of its names), scheduling, the health server, the
// CNI directories. Only flannel's values: each renders with flannel's chart
// too.
func FlannelValues() []ValuesSet {
	return []ValuesSet{
		{"vxlan with backendPort and mtu",
			"flannel:\n  backend: vxlan\n  backendPort: 4789\n  mtu: 1400\n  vni: 4096\n  directRouting: true\n  GBP: true\n"},
		{"host-gw", "flannel:\n  backend: host-gw\n"},
		{"udp with backendPort", "flannel:\n  backend: udp\n  backendPort: 8300\n"},
		{"wireguard", "podCidrv6: fd00:10:244::/56\nflannel:\n  backend: wireguard\n  backendPort: 51830\n" +
			"  backendPortv6: 51831\n  mtu: 1380\n  psk: " + PSK + "\n  tunnelMode: separate\n  keepaliveInterval: 25\n"},
		{"dual-stack podCidrv6", "podCidr: 10.42.0.0/16\npodCidrv6: fd00:10:42::/56\n"},
		{"IPv6 only", "podCidr: \"\"\npodCidrv6: fd00:10:42::/56\n"},
		{"nftables", "flannel:\n  enableNFTables: true\n"},
		{"extra flannel.args",
			"flannel:\n  args:\n  - --ip-masq\n  - --kube-subnet-mgr\n  - --iface=eth1\n  - --iptables-forward-rules=false\n"},
		{"custom image (a mirror of weft's)", "global:\n  imagePullSecrets:\n  - name: mirror-pull\nflannel:\n  image:\n" +
			"    repository: registry.example.com/mirror/weft\n    tag: \"" + version.Release + "\"\n"},
		{"custom CNI plugin image", "flannel:\n  flannel_cni:\n    image:\n      repository: registry.example.com/cni\n      tag: v1\n"},
		{"image_cni, the name before flannel v0.28",
			"flannel:\n  image_cni:\n    repository: registry.example.com/cni\n    tag: v0\n"},
		{"flannel's own images stay weft's", "flannel:\n  image:\n    repository: ghcr.io/flannel-io/flannel\n    tag: v0.28.9\n" +
			"  flannel_cni:\n    image:\n      repository: ghcr.io/flannel-io/flannel-cni-plugin\n      tag: v1.9.1-flannel3\n"},
		{"flannel.image.tag alone", "flannel:\n  image:\n    tag: v0.28.9\n"},
		{"tolerations and nodeSelector", "flannel:\n  tolerations:\n  - key: node-role.kubernetes.io/control-plane\n" +
			"    operator: Exists\n    effect: NoSchedule\n  nodeSelector:\n    eks.amazonaws.com/compute-type: hybrid\n"},
		{"healthz off, the manifest's tolerations",
			"flannel:\n  healthz:\n    port: 0\n  tolerations:\n  - operator: Exists\n    effect: NoSchedule\n"},
		{"healthz on another port", "flannel:\n  healthz:\n    port: 9471\n"},
		{"skipCNIConfigInstallation and the CNI directories",
			"flannel:\n  skipCNIConfigInstallation: true\n  cniBinDir: /var/lib/cni/bin\n  cniConfDir: /var/lib/cni/net.d\n"},
	}
}
