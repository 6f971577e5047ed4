package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/store"
)

// AcquireLease returns this node's lease: its subnets are the Node's
// podCIDRs (not picked: req.Previous is not used), and it publishes
// req.Attrs as flannel's annotations through nodes/status when they differ
// from what the Node carries. The lease has no Expiration.
//
// While the Node is not registered or has no podCIDR, the error wraps
// store.ErrNotYet and says so: the first such call returns at once, so that
// the daemon can show the reason; later ones wait up to NotYetWait on a
// watch of the Node and return as soon as a podCIDR is assigned. A podCIDR
// outside req.Config's network, or a family the config enables without a
// podCIDR, is an error wrapping config.ErrNetConf that names both. Other
// errors are the API's (the caller retries).
func (s *Store) AcquireLease(ctx context.Context, req store.AcquireRequest) (lease.Lease, error) {
	if req.Config == nil {
		return lease.Lease{}, errors.New("acquire lease: no network configuration")
	}
	name, err := s.node(ctx)
	if err != nil {
		return lease.Lease{}, err
	}
	n, err := s.ownNode(ctx, name)
	if err != nil {
		return lease.Lease{}, err
	}
	info := s.k.strip(n)
	l, err := subnets(req.Config, name, info.PodCIDRs)
	if err != nil {
		return lease.Lease{}, fmt.Errorf("%w: %w", config.ErrNetConf, err)
	}
	s.noteLengths(req.Config, name, l)
	s.warnOwnAddresses(req.Config, req.Attrs, n)
	if _, err := s.publish(ctx, name, info.Annotations, req.Attrs); err != nil {
		return lease.Lease{}, err
	}
	s.mu.Lock()
	s.cfg = req.Config
	s.mu.Unlock()
	l.Attrs = req.Attrs
	return l, nil
}

// RenewLease publishes l.Attrs again when the Node's annotations were
// changed or removed (a kube lease has no TTL: there is nothing else to
// renew), and returns l unchanged. The error wraps store.ErrLeaseNotFound
// when the Node is gone or its podCIDRs are no longer l's subnets.
func (s *Store) RenewLease(ctx context.Context, l lease.Lease) (lease.Lease, error) {
	name, err := s.node(ctx)
	if err != nil {
		return lease.Lease{}, err
	}
	n, err := s.o.API.GetNode(ctx, name)
	if apierrors.IsNotFound(err) {
		return lease.Lease{}, fmt.Errorf("%w: node %s is gone", store.ErrLeaseNotFound, name)
	}
	if err != nil {
		return lease.Lease{}, fmt.Errorf("get node %s: %w", name, err)
	}
	info := s.k.strip(n)
	v4, v6, err := podSubnets(info.PodCIDRs)
	if err != nil || (l.Subnet.IsValid() && l.Subnet != v4) || (l.IPv6Subnet.IsValid() && l.IPv6Subnet != v6) {
		return lease.Lease{}, fmt.Errorf("%w: node %s's podCIDRs are now %q", store.ErrLeaseNotFound, name, info.PodCIDRs)
	}
	published, err := s.publish(ctx, name, info.Annotations, l.Attrs)
	if err != nil {
		return lease.Lease{}, err
	}
	if published {
		s.log.Info("node annotations were changed or removed; published them again", "node", name)
	}
	return l, nil
}

// notYetError says what AcquireLease waits for; it wraps store.ErrNotYet.
type notYetError struct{ reason string }

func (e *notYetError) Error() string { return e.reason }
func (e *notYetError) Unwrap() error { return store.ErrNotYet }

func notYet(name string, n *corev1.Node) error {
	if n == nil {
		return &notYetError{fmt.Sprintf("node %s is not registered yet; waiting for it", name)}
	}
	return &notYetError{fmt.Sprintf("node %s has no podCIDR yet; waiting for one to be assigned "+
		"(kube-controller-manager --allocate-node-cidrs, or kubeadm --pod-network-cidr)", name)}
}

func hasPodCIDR(n *corev1.Node) bool {
	return n != nil && (n.Spec.PodCIDR != "" || len(n.Spec.PodCIDRs) > 0)
}

// ownNode gets this node's Node once it has a podCIDR (see AcquireLease).
func (s *Store) ownNode(ctx context.Context, name string) (*corev1.Node, error) {
	n, err := s.o.API.GetNode(ctx, name)
	switch {
	case apierrors.IsNotFound(err):
		n = nil
	case err != nil:
		return nil, fmt.Errorf("get node %s: %w", name, err)
	case hasPodCIDR(n):
		return n, nil
	}
	s.mu.Lock()
	first := !s.waited
	s.waited = true
	s.mu.Unlock()
	if first {
		return nil, notYet(name, n)
	}
	rv := ""
	if n != nil {
		rv = n.ResourceVersion
	}
	return s.waitPodCIDR(ctx, name, rv, n)
}

// waitPodCIDR watches node name from rv for up to NotYetWait until it has a
// podCIDR; last is its state at rv (nil: not registered).
func (s *Store) waitPodCIDR(ctx context.Context, name, rv string, last *corev1.Node) (*corev1.Node, error) {
	wctx, cancel := context.WithTimeout(ctx, s.o.NotYetWait)
	defer cancel()
	w, err := s.o.API.WatchNodes(wctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String(), ResourceVersion: rv})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("watch node %s: %w", name, err)
	}
	defer w.Stop()
	for {
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, notYet(name, last)
		case ev, ok := <-w.ResultChan():
			if !ok {
				return nil, notYet(name, last)
			}
			if ev.Type == watch.Error {
				return nil, fmt.Errorf("watch node %s: %w", name, apierrors.FromObject(ev.Object))
			}
			n, isNode := ev.Object.(*corev1.Node)
			if !isNode || n.Name != name || ev.Type == watch.Bookmark {
				continue // a fake API server may not filter by name
			}
			if ev.Type == watch.Deleted {
				last = nil
				continue
			}
			if last = n; hasPodCIDR(n) {
				return n, nil
			}
		}
	}
}

// publish patches the annotations attrs call for into node name's status
// when cur (its current annotations) differs; it reports whether it did.
// The patch is a strategic merge patch of metadata.annotations through the
// status subresource, as flannel sends it (RBAC: nodes/status patch).
func (s *Store) publish(ctx context.Context, name string, cur map[string]string, attrs lease.Attrs) (bool, error) {
	ov, bad := s.k.overwritesOf(cur)
	for _, err := range bad {
		if s.warn.first("overwrite " + err.Error()) {
			s.log.Warn("ignoring an overwrite annotation; publishing the node's own address", "node", name, "err", err)
		}
	}
	want, err := s.k.published(attrs, ov)
	if err != nil {
		return false, fmt.Errorf("publish annotations on node %s: %w", name, err)
	}
	diff := changed(cur, want)
	if len(diff) == 0 {
		return false, nil
	}
	for _, o := range []struct {
		addr netip.Addr
		key  string
	}{{ov.v4, s.k.publicIP}, {ov.v6, s.k.publicIPv6}} {
		if _, ok := diff[o.key]; ok && o.addr.IsValid() {
			s.log.Info("publishing the operator's overwrite address", "node", name, "annotation", o.key, "address", o.addr)
		}
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": diff}})
	if err != nil {
		return false, fmt.Errorf("publish annotations on node %s: %w", name, err)
	}
	if err := s.o.API.PatchNodeStatus(ctx, name, patch); err != nil {
		return false, fmt.Errorf("publish annotations on node %s: %w", name, err)
	}
	s.log.Debug("published annotations", "node", name, "changed", len(diff))
	return true, nil
}

// MarkUp sets the Node's condition NetworkUnavailable to False, reason
// FlannelIsUp, message "Flannel is running on this node" (flannel's words,
// which tools look for), with a strategic merge patch of nodes/status, when
// SetNodeNetworkUnavailable is set. It retries until it succeeds or ctx
// ends.
func (s *Store) MarkUp(ctx context.Context) error {
	if !s.o.SetNodeNetworkUnavailable {
		return nil
	}
	backoff := s.o.RetryMin
	for {
		name, err := s.node(ctx)
		if err == nil {
			err = s.o.API.PatchNodeStatus(ctx, name, conditionPatch(time.Now()))
			if err == nil {
				s.log.Info("node condition set", "node", name, "NetworkUnavailable", "False")
				return nil
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.log.Warn("set the node's NetworkUnavailable condition; retrying", "err", err, "in", backoff)
		if err := sleep(ctx, backoff); err != nil {
			return err
		}
		backoff = min(2*backoff, s.o.RetryMax)
	}
}

func conditionPatch(now time.Time) []byte {
	t := metav1.NewTime(now)
	c := corev1.NodeCondition{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse, Reason: "FlannelIsUp",
		Message: "Flannel is running on this node", LastTransitionTime: t, LastHeartbeatTime: t}
	b, _ := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{c}}})
	return b
}

// noteLengths says once when a podCIDR's length is not SubnetLen: kube mode
// uses the podCIDR as it is, as flannel does.
func (s *Store) noteLengths(cfg *config.NetConf, name string, l lease.Lease) {
	for _, f := range cfg.Families() {
		sub := l.Subnet
		if f.Network.Addr().Is6() {
			sub = l.IPv6Subnet
		}
		if sub.Bits() != f.SubnetLen && s.warn.first("length "+sub.String()) {
			s.log.Info("the node's podCIDR is not of net-conf.json's subnet length; using the podCIDR", "node", name,
				"podCIDR", sub, "subnet-len", f.SubnetLen)
		}
	}
}

// warnOwnAddresses warns once when the cluster network contains one of the
// node's own addresses (its public address or the Node's InternalIP and
// ExternalIP): the masquerade rule and the peers' routes would then catch
// the node's own traffic, including what it sends to the API server.
func (s *Store) warnOwnAddresses(cfg *config.NetConf, attrs lease.Attrs, n *corev1.Node) {
	addrs := []netip.Addr{attrs.PublicIP, attrs.PublicIPv6}
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil && !slices.Contains(addrs, ip.Unmap()) {
			addrs = append(addrs, ip.Unmap())
		}
	}
	for _, f := range cfg.Families() {
		for _, a := range addrs {
			if a.IsValid() && f.Network.Contains(a) && s.warn.first("own "+a.String()) {
				s.log.Warn("the cluster network contains this node's own address: its masquerade rule and the peers' "+
					"routes would catch the node's own traffic (the API server's too); choose a Network outside the "+
					"node network", "network", f.Network, "address", a, "node", n.Name)
			}
		}
	}
}
