//go:build linux

// Package kubeapi runs a real Kubernetes control plane: kube-apiserver (RBAC
// and Node authorization on, secure port only) and kube-controller-manager
// (allocating podCIDRs to Nodes), built from k8s.io/kubernetes by `make
// kube-bins` (hack/kube-bins.sh). weft's Kubernetes lease store is tested
// against it, and `weft lab` runs one for kube mode.
//
// # Design notes
//
//   - The caller runs etcd (Options.EtcdURL); each control plane keeps its
//     objects under an etcd prefix of its own, so several share one etcd.
//   - Everything a control plane makes is in Options.Dir: a fresh CA and the
//     certificates and keys it signs (pki/), kubeconfigs with their
//     credentials embedded, one log per process, kubectl's cache. Nothing is
//     written elsewhere, and Stop removes nothing.
//   - Only processes it started are ever signalled, by their pid. Unless
//     Options.Detach is set they also die with the process that started them
//     (PR_SET_PDEATHSIG), so a test killed by its timeout leaves none behind.
//   - The apiserver listens on a port free at start (or Options.Port) and
//     keeps it, its certificates and its etcd prefix across
//     StopAPIServer/StartAPIServer, so clients see an outage, not a new
//     cluster.
//   - With Options.NetNS the processes run inside that network namespace
//     (internal/lab's StartIn), and this process reaches the apiserver by
//     dialling from inside it; the root namespace is never configured.
//   - Start returns only when the apiserver answers /readyz and the
//     controller manager has given a probe Node a podCIDR (the probe is then
//     deleted), so callers can create Nodes and expect podCIDRs at once.
package kubeapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/weft-net/weft/internal/proc"
)

// ErrExited is wrapped when a control-plane process exits while it is waited
// for.
var ErrExited = proc.ErrExited

// ErrRunning is returned by StartAPIServer while the apiserver runs.
var ErrRunning = errors.New("kube-apiserver is already running")

// Options configure a control plane. Dir and EtcdURL are required.
type Options struct {
	// Dir holds the control plane's certificates, keys, kubeconfigs and
	// logs; it is created when missing.
	Dir string
	// Bins are the binaries; the zero value means Binaries("").
	Bins Bins
	// EtcdURL is the etcd v3 client URL the apiserver stores objects in.
	EtcdURL string
	// EtcdPrefix is the apiserver's etcd prefix; empty means a random one
	// (/weft-kubeapi-<hex>).
	EtcdPrefix string
	// BindAddress is the apiserver's address; the zero value means
	// 127.0.0.1. It must be a specific address: it is also the URL's host
	// and in the serving certificate.
	BindAddress netip.Addr
	// Port is the apiserver's secure port; 0 picks one that is free.
	Port int
	// ClusterCIDRs are the pod networks the controller manager allocates
	// node podCIDRs from: one, or an IPv4 and an IPv6 one for dual-stack.
	// Empty means 10.244.0.0/16.
	ClusterCIDRs []netip.Prefix
	// NodeCIDRMaskSizes are the podCIDR sizes, one per ClusterCIDRs entry;
	// empty means 24 for IPv4 and 64 for IPv6.
	NodeCIDRMaskSizes []int
	// ServiceCIDRs are the service networks, one per family; empty means
	// 10.96.0.0/12 (and fd00:10:96::/112 when a cluster CIDR is IPv6).
	ServiceCIDRs []netip.Prefix
	// Controllers are the controller manager's controllers; empty means
	// DefaultControllers.
	Controllers []string
	// NetNS, when set, is the named network namespace (/run/netns/<name>)
	// the processes run in. It needs root.
	NetNS string
	// Detach starts the processes in sessions of their own that outlive the
	// caller (`weft lab up` leaves the control plane running). Stop still
	// stops them; after the caller exits only their namespace finds them
	// (`weft lab down` kills every process in the lab's namespaces), so
	// Detach is meant to go with NetNS.
	Detach bool
	// StartTimeout bounds each wait for a process to become ready; 0 means
	// 2 minutes.
	StartTimeout time.Duration
	// Logger receives progress messages; nil discards them.
	Logger *slog.Logger
}

// DefaultControllers are the controllers a control plane runs: podCIDR
// allocation, service accounts and their tokens, namespace deletion, the
// aggregated cluster roles (view, edit, admin) and the root CA config map.
// Node lifecycle is left out: no kubelet reports here.
func DefaultControllers() []string {
	return []string{
		"node-ipam-controller",
		"serviceaccount-controller",
		"serviceaccount-token-controller",
		"namespace-controller",
		"clusterrole-aggregation-controller",
		"root-ca-certificate-publisher-controller",
	}
}

// ControlPlane is a running (or stopped) control plane. Its methods are safe
// for concurrent use.
type ControlPlane struct {
	o    Options
	log  *slog.Logger
	pki  *pki
	http *http.Client
	url  string

	mu        sync.Mutex // guards apiserver and kcm
	apiserver *proc.Proc // nil while stopped
	kcm       *proc.Proc // nil while stopped
}

// Start starts the apiserver and the controller manager and returns when
// both are ready. ctx bounds the start only, not the processes' lifetime:
// they run until Stop. On error every process started is stopped again.
func Start(ctx context.Context, o Options) (_ *ControlPlane, retErr error) {
	begin := time.Now()
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &ControlPlane{o: o, log: o.Logger.With("component", "kubeapi")}
	defer func() {
		if retErr != nil {
			retErr = errors.Join(retErr, c.Stop())
		}
	}()
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", o.Dir, err)
	}
	if c.pki, err = newPKI(filepath.Join(o.Dir, "pki"), o.servingHosts()); err != nil {
		return nil, fmt.Errorf("create certificates: %w", err)
	}
	if c.http, err = c.newHTTPClient(); err != nil {
		return nil, err
	}
	if err := c.startAPIServerFirst(ctx); err != nil {
		return nil, err
	}
	if err := c.startControllerManager(ctx); err != nil {
		return nil, err
	}
	c.log.Info("kubernetes control plane ready", "url", c.url, "etcd-prefix", o.EtcdPrefix,
		"took", time.Since(begin).Round(time.Millisecond), "dir", o.Dir)
	return c, nil
}

// Stop stops the controller manager and the apiserver (SIGTERM, then
// SIGKILL) and waits until they have exited. It removes no file and may be
// called more than once.
func (c *ControlPlane) Stop() error {
	c.mu.Lock()
	kcm, api := c.kcm, c.apiserver
	c.kcm, c.apiserver = nil, nil
	c.mu.Unlock()
	var errs []error
	for _, p := range []*proc.Proc{kcm, api} {
		if p != nil {
			errs = append(errs, p.Stop(stopGrace))
		}
	}
	if kcm != nil || api != nil {
		c.log.Info("kubernetes control plane stopped")
	}
	return errors.Join(errs...)
}

// stopGrace is how long Stop and StopAPIServer wait after SIGTERM before
// SIGKILL. The apiserver stops listening at once on SIGTERM but then waits
// for the watches of its clients (the controller manager's, the caller's)
// for a minute; its data is in etcd, so nothing is lost by cutting that
// short.
const stopGrace = 3 * time.Second

// URL returns the apiserver's URL (https://host:port).
func (c *ControlPlane) URL() string { return c.url }

// CAFile returns the CA certificate that signed the apiserver's serving
// certificate and every client certificate.
func (c *ControlPlane) CAFile() string { return c.pki.path(caCertFile) }

// AdminKubeconfig returns a kubeconfig of a member of system:masters.
func (c *ControlPlane) AdminKubeconfig() string { return filepath.Join(c.o.Dir, "admin.kubeconfig") }

// EtcdPrefix returns the apiserver's etcd prefix.
func (c *ControlPlane) EtcdPrefix() string { return c.o.EtcdPrefix }

// Dir returns the control plane's state directory.
func (c *ControlPlane) Dir() string { return c.o.Dir }

// Processes returns the running processes.
func (c *ControlPlane) Processes() []Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Process
	for _, p := range []*proc.Proc{c.apiserver, c.kcm} {
		if p != nil && !p.Exited() {
			out = append(out, Process{Name: p.Name(), PID: p.Pid(), Log: p.Log()})
		}
	}
	return out
}

func (c *ControlPlane) kcmKubeconfig() string {
	return filepath.Join(c.o.Dir, "controller-manager.kubeconfig")
}

func (c *ControlPlane) logPath(name string) string { return filepath.Join(c.o.Dir, name+".log") }

func (o Options) withDefaults() (Options, error) {
	if o.Dir == "" {
		return o, errors.New("kubeapi options: Dir is required")
	}
	if o.EtcdURL == "" {
		return o, errors.New("kubeapi options: EtcdURL is required")
	}
	if o.Bins.isZero() {
		b, err := Binaries("")
		if err != nil {
			return o, err
		}
		o.Bins = b
	} else if err := o.Bins.check(); err != nil {
		return o, err
	}
	if !o.BindAddress.IsValid() {
		o.BindAddress = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	if o.BindAddress.IsUnspecified() {
		return o, fmt.Errorf("kubeapi options: bind address %s is not a specific address", o.BindAddress)
	}
	if len(o.ClusterCIDRs) == 0 {
		o.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}
	}
	if len(o.ServiceCIDRs) == 0 {
		o.ServiceCIDRs = defaultServiceCIDRs(o.ClusterCIDRs)
	}
	if len(o.Controllers) == 0 {
		o.Controllers = DefaultControllers()
	}
	if o.EtcdPrefix == "" {
		var b [6]byte
		if _, err := rand.Read(b[:]); err != nil {
			return o, fmt.Errorf("random etcd prefix: %w", err)
		}
		o.EtcdPrefix = "/weft-kubeapi-" + hex.EncodeToString(b[:])
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 2 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, o.validateNetworks()
}

func (o Options) validateNetworks() error {
	for _, set := range []struct {
		what string
		ps   []netip.Prefix
	}{{"cluster CIDRs", o.ClusterCIDRs}, {"service CIDRs", o.ServiceCIDRs}} {
		if len(set.ps) > 2 || len(set.ps) == 2 && set.ps[0].Addr().Is4() == set.ps[1].Addr().Is4() {
			return fmt.Errorf("kubeapi options: %s %v: want one, or one IPv4 and one IPv6", set.what, set.ps)
		}
		for _, p := range set.ps {
			if !p.IsValid() || p != p.Masked() {
				return fmt.Errorf("kubeapi options: %s: %v is not a network prefix", set.what, p)
			}
		}
	}
	if len(o.NodeCIDRMaskSizes) == 0 {
		return nil
	}
	if len(o.NodeCIDRMaskSizes) != len(o.ClusterCIDRs) {
		return fmt.Errorf("kubeapi options: %d node CIDR mask sizes for %d cluster CIDRs",
			len(o.NodeCIDRMaskSizes), len(o.ClusterCIDRs))
	}
	for i, size := range o.NodeCIDRMaskSizes {
		p := o.ClusterCIDRs[i]
		if size <= p.Bits() || size > p.Addr().BitLen() {
			return fmt.Errorf("kubeapi options: node CIDR mask size %d does not fit cluster CIDR %s", size, p)
		}
	}
	return nil
}

// defaultServiceCIDRs returns a service network for each family of the
// cluster CIDRs.
func defaultServiceCIDRs(cluster []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range cluster {
		if p.Addr().Is4() {
			out = append(out, netip.MustParsePrefix("10.96.0.0/12"))
		} else {
			out = append(out, netip.MustParsePrefix("fd00:10:96::/112"))
		}
	}
	return out
}

// servingHosts are the names and addresses the serving certificate is for.
func (o Options) servingHosts() []string {
	hosts := []string{o.BindAddress.String(), "127.0.0.1", "::1", "localhost",
		"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	for _, p := range o.ServiceCIDRs {
		hosts = append(hosts, p.Addr().Next().String()) // the kubernetes service's cluster IP
	}
	return hosts
}

// apiserverURL returns the URL of the apiserver on port.
func (o Options) apiserverURL(port int) string {
	return "https://" + net.JoinHostPort(o.BindAddress.String(), strconv.Itoa(port))
}
