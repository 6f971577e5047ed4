package config

import (
	"bytes"
	"errors"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func env(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestOptionDefaults(t *testing.T) {
	o, err := ParseOptions(nil, env(), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	if !reflect.DeepEqual(o, want) {
		t.Errorf("ParseOptions(nil) = %+v, want %+v", o, want)
	}
	checks := map[string]bool{
		"etcd-endpoints":               reflect.DeepEqual(o.EtcdEndpoints, []string{"http://127.0.0.1:4001", "http://127.0.0.1:2379"}),
		"etcd-prefix":                  o.EtcdPrefix == "/coreos.com/network",
		"kube-annotation-prefix":       o.KubeAnnotationPrefix == "flannel.alpha.coreos.com",
		"net-config-path":              o.NetConfigPath == "/etc/kube-flannel/net-conf.json",
		"subnet-file":                  o.SubnetFile == "/run/flannel/subnet.env",
		"subnet-lease-renew-margin":    o.SubnetLeaseRenewMargin == time.Hour,
		"iptables-resync":              o.IPTablesResync == 5*time.Second,
		"iptables-forward-rules":       o.IPTablesForwardRules,
		"iptables-mode":                o.IPTablesMode == "auto",
		"healthz-ip":                   o.HealthzIP == netip.MustParseAddr("0.0.0.0"),
		"healthz-port":                 o.HealthzPort == 0,
		"set-node-network-unavailable": o.SetNodeNetworkUnavailable,
		"ip-masq":                      !o.IPMasq,
	}
	for name, ok := range checks {
		if !ok {
			t.Errorf("default of --%s is wrong", name)
		}
	}
}

func TestOptionsFromFlagsAndEnv(t *testing.T) {
	args := []string{
		"--etcd-endpoints=https://10.0.0.1:2379, https://10.0.0.2:2379", "-etcd-prefix", "/weft/network",
		"--iface", "eth1", "--iface=10.0.0.5", "--iface-regex", "^ens[0-9]+$", "--iface-regex=^eth",
		"--ip-masq", "--iptables-forward-rules=false", "--subnet-lease-renew-margin", "30", "--public-ip=192.168.1.4",
		"--public-ipv6", "fd00::4", "--healthz-port=8285", "--iface-can-reach=8.8.8.8", "--etcd-keyfile=k", "--etcd-certfile=c",
	}
	o, err := ParseOptions(args, env(
		"FLANNELD_ETCD_PREFIX", "/from/env", // command line wins
		"FLANNELD_IPTABLES_RESYNC", "9",
		"FLANNELD_ETCD_USERNAME", "weft",
		"FLANNELD_ETCD_PASSWORD", "s3cret",
		"FLANNELD_IP_BLACKHOLE_ROUTE", "true",
		"NODE_NAME", "node-a",
		"WIREGUARD_KEY_FILE", "/tmp/wg",
	), nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"https://10.0.0.1:2379", "https://10.0.0.2:2379"}; !reflect.DeepEqual(o.EtcdEndpoints, want) {
		t.Errorf("EtcdEndpoints = %q", o.EtcdEndpoints)
	}
	if o.EtcdPrefix != "/weft/network" {
		t.Errorf("EtcdPrefix = %q: the command line must win over FLANNELD_ETCD_PREFIX", o.EtcdPrefix)
	}
	if !reflect.DeepEqual(o.Iface, []string{"eth1", "10.0.0.5"}) || !reflect.DeepEqual(o.IfaceRegex, []string{"^ens[0-9]+$", "^eth"}) {
		t.Errorf("Iface = %q, IfaceRegex = %q", o.Iface, o.IfaceRegex)
	}
	if !o.IPMasq || o.IPTablesForwardRules || !o.IPBlackholeRoute || o.IPTablesResync != 9*time.Second {
		t.Errorf("masq options = %v %v %v %v", o.IPMasq, o.IPTablesForwardRules, o.IPBlackholeRoute, o.IPTablesResync)
	}
	if o.SubnetLeaseRenewMargin != 30*time.Minute || o.HealthzPort != 8285 {
		t.Errorf("margin %v port %d", o.SubnetLeaseRenewMargin, o.HealthzPort)
	}
	if o.PublicIP != netip.MustParseAddr("192.168.1.4") || o.PublicIPv6 != netip.MustParseAddr("fd00::4") || o.IfaceCanReach != netip.MustParseAddr("8.8.8.8") {
		t.Errorf("addresses %v %v %v", o.PublicIP, o.PublicIPv6, o.IfaceCanReach)
	}
	if o.EtcdUsername != "weft" || o.EtcdPassword != "s3cret" || o.NodeName != "node-a" || o.WireGuardKeyFile != "/tmp/wg" {
		t.Errorf("env options %+v", o)
	}
}

func TestOptionErrors(t *testing.T) {
	tests := []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"--subnet-lease-renew-margin", "2000"}, nil, "--subnet-lease-renew-margin: 2000 is outside 1..1439"},
		{[]string{"--subnet-lease-renew-margin=0"}, nil, "--subnet-lease-renew-margin: 0 is outside 1..1439"},
		{nil, []string{"FLANNELD_SUBNET_LEASE_RENEW_MARGIN", "abc"}, `FLANNELD_SUBNET_LEASE_RENEW_MARGIN (--subnet-lease-renew-margin): "abc" is not a whole number`},
		{[]string{"--healthz-port=65536"}, nil, "--healthz-port: 65536 is outside 0..65535"},
		{[]string{"--iptables-resync=0"}, nil, "--iptables-resync: 0 is outside 1..86400"},
		{[]string{"--ip-masq=maybe"}, nil, `--ip-masq: "maybe" is not true or false`},
		{[]string{"--iptables-mode=nftables"}, nil, `--iptables-mode: "nftables" is not one of auto, legacy, nft`},
		{[]string{"--iptables-mode", "Legacy"}, nil, `--iptables-mode: "Legacy" is not one of auto, legacy, nft`},
		{nil, []string{"FLANNELD_IPTABLES_MODE", "iptables-legacy"}, `FLANNELD_IPTABLES_MODE (--iptables-mode): "iptables-legacy" is not one of auto, legacy, nft`},
		{[]string{"--network-policy"}, nil, "--network-policy: needs --kube-subnet-mgr"},
		{[]string{"--network-policy", "--kube-subnet-mgr"}, []string{"POD_NAME", "p", "POD_NAMESPACE", "ns"}, "--network-policy: needs NODE_NAME"},
		{nil, []string{"FLANNELD_NETWORK_POLICY", "yes"}, `FLANNELD_NETWORK_POLICY (--network-policy): "yes" is not true or false`},
		{[]string{"--public-ip=fd00::1"}, nil, "--public-ip: fd00::1 is not an IPv4 address"},
		{[]string{"--public-ipv6=10.0.0.1"}, nil, "--public-ipv6: 10.0.0.1 is not an IPv6 address"},
		{[]string{"--healthz-ip=localhost"}, nil, `--healthz-ip: "localhost" is not an IP address`},
		{[]string{"--no-such-flag"}, nil, "--no-such-flag: unknown flag"},
		{[]string{"--etcd-prefix"}, nil, "--etcd-prefix: needs a value"},
		{[]string{"extra"}, nil, `unexpected argument "extra"`},
		{[]string{"--etcd-endpoints=127.0.0.1:2379"}, nil, `--etcd-endpoints: "127.0.0.1:2379" is not an endpoint URL`},
		{[]string{"--etcd-endpoints=,"}, nil, "--etcd-endpoints: must list at least one endpoint"},
		{[]string{"--etcd-prefix=coreos.com"}, nil, `--etcd-prefix: "coreos.com" must start with /`},
		{[]string{"--etcd-keyfile=k"}, nil, "--etcd-keyfile: --etcd-keyfile and --etcd-certfile must be given together"},
		{[]string{"--iface-regex=(["}, nil, `--iface-regex: "([" is not a regular expression`},
		{[]string{"--iface="}, nil, "--iface: must not be empty"},
		{[]string{"--kube-subnet-mgr"}, nil, "--kube-subnet-mgr needs NODE_NAME, or POD_NAME and POD_NAMESPACE"},
		{[]string{"--kube-subnet-mgr", "--kube-api-url=api:6443"}, []string{"NODE_NAME", "n"}, `--kube-api-url: "api:6443" is not a URL`},
		{[]string{"--kube-annotation-prefix=Not_Valid"}, nil, `--kube-annotation-prefix: "Not_Valid" is not a DNS subdomain`},
	}
	for _, tc := range tests {
		_, err := ParseOptions(tc.args, env(tc.env...), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseOptions(%q, %q) = %v, want %q", tc.args, tc.env, err, tc.want)
			continue
		}
		if !errors.Is(err, ErrFlag) {
			t.Errorf("error %v does not wrap ErrFlag", err)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("error %q is more than one line", err)
		}
	}
}

func TestIPTablesMode(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  []string
		want string
	}{
		{nil, nil, "auto"},
		{[]string{"--iptables-mode=legacy"}, nil, "legacy"},
		{[]string{"--iptables-mode", "nft"}, nil, "nft"},
		{nil, []string{"FLANNELD_IPTABLES_MODE", "legacy"}, "legacy"},
		{[]string{"--iptables-mode=auto"}, []string{"FLANNELD_IPTABLES_MODE", "legacy"}, "auto"}, // command line wins
	} {
		o, err := ParseOptions(tc.args, env(tc.env...), nil)
		if err != nil || o.IPTablesMode != tc.want {
			t.Errorf("ParseOptions(%q, %q): IPTablesMode %q, %v; want %q", tc.args, tc.env, o.IPTablesMode, err, tc.want)
		}
	}
	var buf bytes.Buffer
	o, _ := ParseOptions([]string{"--iptables-mode=nft"}, env(), nil)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("options", "options", &o)
	if !strings.Contains(buf.String(), "options.iptables-mode=nft") {
		t.Errorf("the options' log line does not name the iptables mode: %s", buf.String())
	}
	buf.Reset()
	Usage(&buf, nil)
	if !strings.Contains(buf.String(), "legacy or nft") || !strings.Contains(buf.String(), "(default auto) [FLANNELD_IPTABLES_MODE]") {
		t.Errorf("--help does not describe --iptables-mode:\n%s", buf.String())
	}
}

func TestKubeModeFromPodEnv(t *testing.T) {
	o, err := ParseOptions([]string{"--kube-subnet-mgr", "--ip-masq"}, env("POD_NAME", "kube-flannel-ds-x", "POD_NAMESPACE", "kube-flannel"), nil)
	if err != nil || !o.KubeSubnetMgr || o.PodName != "kube-flannel-ds-x" {
		t.Fatalf("ParseOptions = %+v, %v", o, err)
	}
}

func TestPasswordNeverShown(t *testing.T) {
	const secret = "hunter2-very-secret"
	o, err := ParseOptions([]string{"--etcd-username=u", "--etcd-password", secret}, env(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("options", "options", &o)
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("options", "options", &o)
	if strings.Contains(buf.String(), secret) || !strings.Contains(buf.String(), "etcd-password=set") {
		t.Errorf("log output leaks or hides the password state: %s", buf.String())
	}
	_, err = ParseOptions([]string{"--etcd-password", secret, "--bogus"}, env(), nil)
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Errorf("error %v leaks the password", err)
	}
	_, err = ParseOptions([]string{"--etcd-password=" + secret}, env(), nil)
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Errorf("error %v leaks the password", err)
	}
	var help bytes.Buffer
	Usage(&help, nil)
	if strings.Contains(help.String(), secret) {
		t.Error("help leaks the password")
	}
}

// Every flag of SPEC.md's table appears in --help with its environment form.
func TestUsageListsEveryFlag(t *testing.T) {
	var buf bytes.Buffer
	Usage(&buf, nil)
	for _, f := range []string{"etcd-endpoints", "etcd-prefix", "etcd-keyfile", "etcd-certfile", "etcd-cafile", "etcd-username",
		"etcd-password", "kube-subnet-mgr", "kube-api-url", "kubeconfig-file", "kube-annotation-prefix", "net-config-path", "iface",
		"iface-regex", "iface-can-reach", "public-ip", "public-ipv6", "subnet-file", "subnet-lease-renew-margin", "ip-masq",
		"ip-masq-fully-random-disable", "iptables-resync", "iptables-forward-rules", "iptables-mode", "ip-blackhole-route", "healthz-ip",
		"healthz-port", "set-node-network-unavailable", "version"} {
		if !strings.Contains(buf.String(), "--"+f+"\n") || !strings.Contains(buf.String(), "["+EnvName(f)+"]") {
			t.Errorf("--help does not list --%s with %s", f, EnvName(f))
		}
	}
	if !strings.Contains(buf.String(), "(default /run/flannel/subnet.env)") {
		t.Error("--help does not show defaults")
	}
}

func TestHelpAndVersionSkipValidation(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"--version"}, {"-version", "--kube-subnet-mgr"}} {
		o, err := ParseOptions(args, env(), nil)
		if err != nil || !(o.Help || o.Version) {
			t.Errorf("ParseOptions(%q) = %v", args, err)
		}
	}
}

func TestEnvName(t *testing.T) {
	for in, want := range map[string]string{"etcd-endpoints": "FLANNELD_ETCD_ENDPOINTS", "ip-masq": "FLANNELD_IP_MASQ", "a.b-c": "FLANNELD_A_B_C"} {
		if got := EnvName(in); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", in, got, want)
		}
	}
}
