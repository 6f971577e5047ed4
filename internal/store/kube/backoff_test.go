package kube

import (
	"errors"
	"fmt"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The wait doubles through an outage, starts again at the minimum when a
// restarted server first answers (a 403 while its RBAC caches fill), and
// doubles again while the server keeps refusing.
func TestBackoffAfterOutage(t *testing.T) {
	b := newBackoff(500*time.Millisecond, 30*time.Second)
	down := fmt.Errorf("list nodes: %w", errors.New("dial tcp 192.168.100.2:6443: connect: connection refused"))
	forbidden := fmt.Errorf("watch nodes: %w", apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "", errors.New("RBAC: not ready")))
	var got []time.Duration
	for _, err := range []error{down, down, down, down, down, down, down, forbidden, forbidden, forbidden, down, forbidden} {
		got = append(got, b.next(err))
	}
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second,
		30 * time.Second, 500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 500 * time.Millisecond}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("waits %v\nwant  %v", got, want)
	}
	b.reset()
	if d := b.next(down); d != 500*time.Millisecond {
		t.Errorf("after reset: %v", d)
	}
}
