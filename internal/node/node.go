//go:build linux

// Package node builds what a node's daemon runs with from weftd's options:
// the lease store and the masquerade rule manager. weftd and weft status
// share it, so that status reads the same store and rules the daemon uses.
package node

import (
	"context"
	"log/slog"
	"time"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/daemon"
	"github.com/weft-net/weft/internal/netfilter"
	"github.com/weft-net/weft/internal/netfilter/iptables"
	"github.com/weft-net/weft/internal/netfilter/nftables"
	"github.com/weft-net/weft/internal/store"
	"github.com/weft-net/weft/internal/store/etcd"
	"github.com/weft-net/weft/internal/store/kube"
)

// NewStore builds the lease store the options select: the Kubernetes API
// (--kube-subnet-mgr; net-conf.json is read and checked, its Backend
// section against backends, before anything else) or etcd.
func NewStore(log *slog.Logger, opts *config.Options, backends backend.Registry, userAgent string) (store.Store, error) {
	if !opts.KubeSubnetMgr {
		return etcd.New(etcd.Options{Endpoints: opts.EtcdEndpoints, Prefix: opts.EtcdPrefix, KeyFile: opts.EtcdKeyfile,
			CertFile: opts.EtcdCertfile, CAFile: opts.EtcdCAFile, Username: opts.EtcdUsername, Password: opts.EtcdPassword,
			Logger: log})
	}
	nc, err := kube.ReadNetConf(opts.NetConfigPath, log)
	if err != nil {
		return nil, err
	}
	if _, err := nc.ConfigureBackend(backends); err != nil { // weftd logs the warnings
		return nil, err
	}
	cli, err := kube.Connect(opts.KubeAPIURL, opts.KubeConfigFile, userAgent)
	if err != nil {
		return nil, err
	}
	return kube.New(kube.Options{API: cli, NodeName: opts.NodeName, PodName: opts.PodName, PodNamespace: opts.PodNamespace,
		Prefix: opts.KubeAnnotationPrefix, NetConf: nc, NetConfPath: opts.NetConfigPath,
		SetNodeNetworkUnavailable: opts.SetNodeNetworkUnavailable, Logger: log})
}

// NewRules returns the constructor of the masquerade and forward rule
// manager: nftables when net-conf.json says EnableNFTables, else iptables.
// The other mode's rules are removed (best effort), so a node moved between
// modes does not keep stale rules.
func NewRules(log *slog.Logger, o *config.Options) func(*config.NetConf) (daemon.Rules, error) {
	return func(nc *config.NetConf) (daemon.Rules, error) {
		run := netfilter.ExecRunner{}
		log := log.With("component", "netfilter")
		ipt := iptables.NewManager(run, log, iptables.Options{}, o.IPTablesResync)
		nft := nftables.NewManager(run, log, o.IPTablesResync)
		use, other := ipt, nft
		if nc.EnableNFTables {
			use, other = nft, ipt
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := other.Cleanup(ctx); err != nil {
			log.Debug("no rules of the other mode to remove", "err", err)
		}
		return use, nil
	}
}

// CheckRules describes how the kernel's masquerade and forward rules differ
// from what weftd with these options would install for cfg (weft status).
// Unlike NewRules it changes nothing, the other mode's rules included.
func CheckRules(log *slog.Logger, o *config.Options) func(context.Context, *config.NetConf, netfilter.Config) ([]string, error) {
	return func(ctx context.Context, nc *config.NetConf, cfg netfilter.Config) ([]string, error) {
		run := netfilter.ExecRunner{}
		var s *netfilter.Syncer
		if nc.EnableNFTables {
			s = nftables.NewManager(run, log, o.IPTablesResync)
		} else {
			s = iptables.NewManager(run, log, iptables.Options{}, o.IPTablesResync)
		}
		return s.Check(ctx, cfg)
	}
}
