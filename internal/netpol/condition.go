package netpol

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
)

// ConditionType is the Node condition weftd sets with --network-policy:
// True when the node's pods are policed as the cluster's policies say,
// False with a reason and message when not. `kubectl describe node` shows
// it; the nodes/status patch right flannel's ClusterRole already has is
// all it needs.
const ConditionType = "WeftNetworkPolicy"

// conditionWriter patches the condition when it changes.
type conditionWriter struct {
	c    *rest.RESTClient
	node string

	mu   sync.Mutex
	last corev1.NodeCondition
}

func newConditionWriter(cfg *rest.Config, node string) (*conditionWriter, error) {
	c, err := restClient(cfg, corev1.SchemeGroupVersion, "/api")
	if err != nil {
		return nil, err
	}
	return &conditionWriter{c: c, node: node}, nil
}

// set patches the condition unless it already says the same; a failure is
// logged and retried at the next change or sync.
func (w *conditionWriter) set(ctx context.Context, log *slog.Logger, ok bool, reason, message string) {
	status := corev1.ConditionFalse
	if ok {
		status = corev1.ConditionTrue
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.last.Status == status && w.last.Reason == reason && w.last.Message == message {
		return
	}
	now := metav1.NewTime(time.Now())
	cond := corev1.NodeCondition{Type: ConditionType, Status: status, Reason: reason, Message: message,
		LastHeartbeatTime: now, LastTransitionTime: now}
	if w.last.Status == status {
		cond.LastTransitionTime = w.last.LastTransitionTime
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{cond}}})
	if err != nil {
		log.Warn("network policy: node condition", "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err = w.c.Patch(types.StrategicMergePatchType).Resource("nodes").Name(w.node).SubResource("status").
		Body(patch).Do(ctx).Error()
	if err != nil {
		log.Warn("network policy: could not set the node condition "+ConditionType, "err", fmt.Errorf("patch node %s: %w", w.node, err))
		return
	}
	w.last = cond
}
