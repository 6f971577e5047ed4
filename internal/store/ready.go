package store

import (
	"context"
	"errors"
)

// ErrNotYet is wrapped by AcquireLease errors that resolve themselves
// without anyone's help: the Kubernetes store returns it while the node's
// Node object is not registered or has no podCIDR yet. The error's text says
// what the store waits for; the caller shows it (weftd's /readyz) and calls
// again soon. A store that returns ErrNotYet paces itself (it waits on a
// watch before returning), so the caller need not back off.
var ErrNotYet = errors.New("not yet")

// Readier is implemented by stores that publish that the node is up (the
// Kubernetes store sets the Node's NetworkUnavailable condition to False).
// The daemon calls MarkUp once, after subnet.env is written.
type Readier interface {
	// MarkUp records that the node is up. It retries transient errors
	// until it succeeds or ctx ends (then it returns ctx.Err()); the caller
	// runs it off its critical path.
	MarkUp(ctx context.Context) error
}
