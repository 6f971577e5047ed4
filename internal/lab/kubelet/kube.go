//go:build linux

package kubelet

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// phaseTimeout bounds each wait of Up.
const phaseTimeout = 3 * time.Minute

// nodeInfo is what the lab reads of a Node.
type nodeInfo struct {
	name               string
	ready              bool
	networkUnavailable string // the condition's status, "" when absent
	podCIDRs           []string
	taints             []string
}

// podInfo is what the lab reads of a Pod.
type podInfo struct {
	name, node, phase string
	uid               string
	ip                netip.Addr
	running, ready    bool
	images            []string // the containers' (not the init containers')
}

// Name, Node and IP describe a pod for callers.
func (p podInfo) Name() string   { return p.name }
func (p podInfo) Node() string   { return p.node }
func (p podInfo) IP() netip.Addr { return p.ip }
func (p podInfo) String() string {
	return fmt.Sprintf("%s on %s (%s, %s)", p.name, p.node, p.ip, p.phase)
}
func (n nodeInfo) String() string {
	return fmt.Sprintf("%s ready=%v podCIDRs=%v", n.name, n.ready, n.podCIDRs)
}

func (l *Lab) nodeInfos(ctx context.Context) (map[string]*nodeInfo, error) {
	out, err := l.kubectl(ctx, "get", "nodes", "-o", "json")
	if err != nil {
		return nil, err
	}
	var list corev1.NodeList
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("decode nodes: %w", err)
	}
	m := map[string]*nodeInfo{}
	for _, n := range list.Items {
		ni := &nodeInfo{name: n.Name, podCIDRs: n.Spec.PodCIDRs}
		for _, c := range n.Status.Conditions {
			switch c.Type {
			case corev1.NodeReady:
				ni.ready = c.Status == corev1.ConditionTrue
			case corev1.NodeNetworkUnavailable:
				ni.networkUnavailable = string(c.Status)
			}
		}
		for _, t := range n.Spec.Taints {
			ni.taints = append(ni.taints, t.Key+":"+string(t.Effect))
		}
		m[n.Name] = ni
	}
	return m, nil
}

func (l *Lab) pods(ctx context.Context, namespace, selector string) ([]podInfo, error) {
	out, err := l.kubectl(ctx, "get", "pods", "-n", namespace, "-l", selector, "-o", "json")
	if err != nil {
		return nil, err
	}
	var list corev1.PodList
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("decode pods: %w", err)
	}
	var pods []podInfo
	for _, p := range list.Items {
		pi := podInfo{name: p.Name, node: p.Spec.NodeName, phase: string(p.Status.Phase), uid: string(p.UID),
			running: p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil}
		for _, c := range p.Spec.Containers {
			pi.images = append(pi.images, c.Image)
		}
		pi.ip, _ = netip.ParseAddr(p.Status.PodIP)
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady {
				pi.ready = c.Status == corev1.ConditionTrue
			}
		}
		pods = append(pods, pi)
	}
	return pods, nil
}

// waitNodes waits until every lab node has a Node for which ok holds.
func (l *Lab) waitNodes(ctx context.Context, what string, ok func(*nodeInfo) bool) error {
	return l.poll(ctx, "nodes "+what, func() (bool, string, error) {
		infos, err := l.nodeInfos(ctx)
		if err != nil {
			return false, "", err
		}
		var missing []string
		for _, n := range l.nodes {
			if ni := infos[n.name]; ni == nil || !ok(ni) {
				s := n.name + "(absent)"
				if ni != nil {
					s = fmt.Sprintf("%s(ready=%v taints=%v)", n.name, ni.ready, ni.taints)
				}
				missing = append(missing, s)
			}
		}
		return len(missing) == 0, strings.Join(missing, " "), nil
	})
}

// poll calls check every 250 ms until it reports done, failing after
// phaseTimeout with check's last state, or at once when a node's kubelet or
// containerd exited.
func (l *Lab) poll(ctx context.Context, what string, check func() (bool, string, error)) error {
	ctx, cancel := context.WithTimeout(ctx, phaseTimeout)
	defer cancel()
	last := ""
	for {
		done, state, err := check()
		if err == nil && done {
			return nil
		}
		if err != nil {
			state = err.Error()
		}
		if state != last {
			l.log.Debug("waiting", "for", what, "state", state)
			last = state
		}
		for _, n := range l.nodes {
			for _, p := range []*proc{n.kubelet, n.containerd} {
				if p != nil && p.Exited() {
					return fmt.Errorf("wait for %s: node %s: %w", what, n.name, p.ExitError())
				}
			}
		}
		if l.sched != nil && l.sched.Exited() {
			return fmt.Errorf("wait for %s: %w", what, l.sched.ExitError())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w (last: %s)", what, ctx.Err(), last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}
