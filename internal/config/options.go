// Package config holds weft's configuration: the node daemon's options
// (flanneld's flags and their FLANNELD_* environment forms) and net-conf.json,
// the cluster network's configuration, with flannel's defaults and checks.
package config

import (
	"flag"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"time"
)

// FlagAdder is a part of weftd that owns flags beside the Options: a backend
// type's node settings (backend.Type.Settings). AddFlags registers them on
// fs with the value's current contents as defaults; like every weftd flag,
// each also reads FLANNELD_<NAME>.
type FlagAdder interface {
	AddFlags(fs *flag.FlagSet)
}

// Options are weftd's settings. Field comments give the flag; every flag also
// reads FLANNELD_<NAME> (see EnvName) and the command line wins.
type Options struct {
	EtcdEndpoints []string // --etcd-endpoints
	EtcdPrefix    string   // --etcd-prefix
	EtcdKeyfile   string   // --etcd-keyfile
	EtcdCertfile  string   // --etcd-certfile
	EtcdCAFile    string   // --etcd-cafile
	EtcdUsername  string   // --etcd-username
	EtcdPassword  string   // --etcd-password: a secret, never logged

	KubeSubnetMgr        bool   // --kube-subnet-mgr
	KubeAPIURL           string // --kube-api-url
	KubeConfigFile       string // --kubeconfig-file
	KubeAnnotationPrefix string // --kube-annotation-prefix
	NetConfigPath        string // --net-config-path

	Iface         []string   // --iface (repeatable): interface name or address
	IfaceRegex    []string   // --iface-regex (repeatable)
	IfaceCanReach netip.Addr // --iface-can-reach
	PublicIP      netip.Addr // --public-ip
	PublicIPv6    netip.Addr // --public-ipv6

	SubnetFile             string        // --subnet-file
	SubnetLeaseRenewMargin time.Duration // --subnet-lease-renew-margin (minutes)

	IPMasq                   bool          // --ip-masq
	IPMasqFullyRandomDisable bool          // --ip-masq-fully-random-disable
	IPTablesResync           time.Duration // --iptables-resync (seconds)
	IPTablesForwardRules     bool          // --iptables-forward-rules
	IPBlackholeRoute         bool          // --ip-blackhole-route
	IPTablesMode             string        // --iptables-mode: auto, legacy or nft (weft's own flag)
	NetworkPolicy            bool          // --network-policy: enforce NetworkPolicy (weft's own flag, kube mode)
	NetworkPolicyLogDrops    bool          // --network-policy-log-drops

	HealthzIP   netip.Addr // --healthz-ip
	HealthzPort int        // --healthz-port (0: off)

	SetNodeNetworkUnavailable bool // --set-node-network-unavailable
	Verbosity                 int  // --v: 0 info, 1+ debug
	Version                   bool // --version
	Help                      bool // --help, -h

	// Backends are the backend types' node settings by type name, parsed
	// with the options (their flags are the types' own).
	Backends map[string]FlagAdder

	// From the environment, not flags.
	NodeName         string // NODE_NAME
	PodName          string // POD_NAME
	PodNamespace     string // POD_NAMESPACE
	WireGuardKeyFile string // WIREGUARD_KEY_FILE
}

// Defaults returns the options with flanneld's defaults.
func Defaults() Options {
	return Options{
		EtcdEndpoints:             []string{"http://127.0.0.1:4001", "http://127.0.0.1:2379"},
		EtcdPrefix:                "/coreos.com/network",
		KubeAnnotationPrefix:      "flannel.alpha.coreos.com",
		NetConfigPath:             "/etc/kube-flannel/net-conf.json",
		SubnetFile:                "/run/flannel/subnet.env",
		SubnetLeaseRenewMargin:    60 * time.Minute,
		IPTablesResync:            5 * time.Second,
		IPTablesForwardRules:      true,
		IPTablesMode:              "auto",
		HealthzIP:                 netip.IPv4Unspecified(),
		SetNodeNetworkUnavailable: true,
		WireGuardKeyFile:          "/run/flannel/wgkey",
	}
}

// secretFlags never have their values printed.
func secretFlags() map[string]bool { return map[string]bool{"etcd-password": true} }

// AddFlags registers every option on fs, with the current values of o as
// defaults.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.Var(listValue{&o.EtcdEndpoints}, "etcd-endpoints", "comma-separated list of etcd endpoints")
	fs.Var(stringValue{&o.EtcdPrefix}, "etcd-prefix", "etcd prefix of the network's keys")
	fs.Var(stringValue{&o.EtcdKeyfile}, "etcd-keyfile", "TLS client key file for etcd")
	fs.Var(stringValue{&o.EtcdCertfile}, "etcd-certfile", "TLS client certificate file for etcd")
	fs.Var(stringValue{&o.EtcdCAFile}, "etcd-cafile", "TLS CA file that signed etcd's server certificate")
	fs.Var(stringValue{&o.EtcdUsername}, "etcd-username", "etcd username")
	fs.Var(stringValue{&o.EtcdPassword}, "etcd-password", "etcd password (prefer FLANNELD_ETCD_PASSWORD; never logged)")

	fs.Var(boolValue{&o.KubeSubnetMgr}, "kube-subnet-mgr", "keep leases in the Kubernetes API (Node objects) instead of etcd")
	fs.Var(stringValue{&o.KubeAPIURL}, "kube-api-url", "Kubernetes API server URL (in-cluster config when it and --kubeconfig-file are empty)")
	fs.Var(stringValue{&o.KubeConfigFile}, "kubeconfig-file", "kubeconfig file (in-cluster config when it and --kube-api-url are empty)")
	fs.Var(stringValue{&o.KubeAnnotationPrefix}, "kube-annotation-prefix", "prefix of the Node annotations weft reads and writes")
	fs.Var(stringValue{&o.NetConfigPath}, "net-config-path", "net-conf.json path (with --kube-subnet-mgr)")

	fs.Var(repeatValue{&o.Iface}, "iface", "interface name or address for inter-node traffic (repeatable; first match wins)")
	fs.Var(repeatValue{&o.IfaceRegex}, "iface-regex", "regular expression matching the interface name or address (repeatable)")
	fs.Var(addrValue{&o.IfaceCanReach, 0}, "iface-can-reach", "use the interface the kernel would use to reach this address")
	fs.Var(addrValue{&o.PublicIP, 4}, "public-ip", "IPv4 address other nodes reach this node at (default: the interface's)")
	fs.Var(addrValue{&o.PublicIPv6, 6}, "public-ipv6", "IPv6 address other nodes reach this node at (default: the interface's)")

	fs.Var(stringValue{&o.SubnetFile}, "subnet-file", "where to write the subnet.env file")
	fs.Var(durationValue{&o.SubnetLeaseRenewMargin, time.Minute, 1, 1439}, "subnet-lease-renew-margin", "renew the lease this many minutes before it expires (1..1439)")

	fs.Var(boolValue{&o.IPMasq}, "ip-masq", "masquerade traffic leaving the cluster network")
	fs.Var(boolValue{&o.IPMasqFullyRandomDisable}, "ip-masq-fully-random-disable", "do not use --random-fully in masquerade rules")
	fs.Var(durationValue{&o.IPTablesResync, time.Second, 1, 86400}, "iptables-resync", "check and restore the masquerade and forward rules every this many seconds")
	fs.Var(boolValue{&o.IPTablesForwardRules}, "iptables-forward-rules", "add FORWARD ACCEPT rules for the cluster network")
	fs.Var(boolValue{&o.IPBlackholeRoute}, "ip-blackhole-route", "add a blackhole route for the node's own subnet")
	fs.Var(choiceValue{&o.IPTablesMode, []string{"auto", "legacy", "nft"}}, "iptables-mode",
		"iptables variant of the masquerade and forward rules: auto (the node's, detected as flannel's iptables-wrapper does), legacy or nft; unused with net-conf.json's EnableNFTables")

	fs.Var(boolValue{&o.NetworkPolicy}, "network-policy",
		"enforce Kubernetes NetworkPolicy for this node's pods with nftables (needs --kube-subnet-mgr)")
	fs.Var(boolValue{&o.NetworkPolicyLogDrops}, "network-policy-log-drops",
		"with --network-policy, log packets the policies deny to the kernel log (at most 10 a second per pod chain)")

	fs.Var(addrValue{&o.HealthzIP, 0}, "healthz-ip", "address the /healthz and /readyz server listens on")
	fs.Var(intValue{&o.HealthzPort, 0, 65535}, "healthz-port", "port of the /healthz and /readyz server (0: off)")

	fs.Var(boolValue{&o.SetNodeNetworkUnavailable}, "set-node-network-unavailable", "set the Node's NetworkUnavailable condition to False once up (kube mode)")
	fs.Var(intValue{&o.Verbosity, 0, 10}, "v", "log verbosity: 0 info, 1 or more debug")
	fs.Var(boolValue{&o.Version}, "version", "print the version and exit")
	fs.Var(boolValue{&o.Help}, "help", "print this help and exit")
	fs.Var(boolValue{&o.Help}, "h", "print this help and exit")
	for _, name := range slices.Sorted(maps.Keys(o.Backends)) {
		o.Backends[name].AddFlags(fs)
	}
}

// LogValue describes the options for logs, leaving out secrets.
func (o *Options) LogValue() slog.Value {
	password := "unset"
	if o.EtcdPassword != "" {
		password = "set"
	}
	return slog.GroupValue(
		slog.Any("etcd-endpoints", o.EtcdEndpoints),
		slog.String("etcd-prefix", o.EtcdPrefix),
		slog.String("etcd-username", o.EtcdUsername),
		slog.String("etcd-password", password),
		slog.Bool("etcd-tls", o.EtcdKeyfile != "" && o.EtcdCertfile != ""),
		slog.Bool("kube-subnet-mgr", o.KubeSubnetMgr),
		slog.Any("iface", o.Iface),
		slog.Any("iface-regex", o.IfaceRegex),
		slog.String("public-ip", addrString(o.PublicIP)),
		slog.String("subnet-file", o.SubnetFile),
		slog.Duration("subnet-lease-renew-margin", o.SubnetLeaseRenewMargin),
		slog.Bool("ip-masq", o.IPMasq),
		slog.String("iptables-mode", o.IPTablesMode),
		slog.Bool("network-policy", o.NetworkPolicy),
		slog.Int("healthz-port", o.HealthzPort),
		slog.Any("backend-settings", o.backendSettings()),
	)
}

// backendSettings are the backend types' flags with their values, for logs.
func (o *Options) backendSettings() map[string]string {
	fs := flag.NewFlagSet("backends", flag.ContinueOnError)
	for _, b := range o.Backends {
		b.AddFlags(fs)
	}
	out := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) { out[f.Name] = f.Value.String() })
	return out
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
