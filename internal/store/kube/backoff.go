package kube

import (
	"errors"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// backoff is the wait between retries of a failed API request: doubling
// from RetryMin to RetryMax, and back to RetryMin the first time the API
// server answers again after it could not be reached. A restarted API
// server refuses requests for a moment (403 until its RBAC caches are
// filled), and a wait grown through the outage would otherwise follow that
// first refusal: a 30 s outage left the node watch 30 s behind a server
// that was back.
type backoff struct {
	min, max, cur time.Duration
	unreachable   bool // the last error had no answer from the server
}

func newBackoff(minWait, maxWait time.Duration) *backoff {
	return &backoff{min: minWait, max: maxWait, cur: minWait}
}

// next returns how long to wait after err.
func (b *backoff) next(err error) time.Duration {
	var st apierrors.APIStatus
	answered := err == nil || errors.As(err, &st)
	if answered && b.unreachable {
		b.cur = b.min
	}
	b.unreachable = !answered
	d := b.cur
	b.cur = min(2*b.cur, b.max)
	return d
}

// reset starts again from RetryMin (a request went through).
func (b *backoff) reset() { b.cur, b.unreachable = b.min, false }
