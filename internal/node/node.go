//go:build linux

// Package node builds what a node's daemon runs with from weftd's options:
// the lease store (node.go) and the masquerade rule manager in the iptables
// variant or nftables mode the node uses (rules.go). weftd and weft status
// share it, so that status reads the same store and rules the daemon uses.
package node

import (
	"log/slog"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/config"
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
