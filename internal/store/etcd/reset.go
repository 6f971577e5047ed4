package etcd

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// errReset means etcd is not the one the watch was following: it was
// restarted from an empty data directory or restored from an old snapshot.
var errReset = errors.New("etcd was reset")

// checkTimeout bounds one reset check; an etcd that does not answer in time
// is asked again at the next check (the watch resumes by itself).
const checkTimeout = 2 * time.Second

// maxTTLLookups bounds the TimeToLive calls of one reset check, so a watch
// of thousands of leases learns their expiries over a few minutes instead of
// in one burst.
const maxTTLLookups = 64

// resetCheck is what the reset checks saw of etcd. Not safe for concurrent
// use (the watcher's goroutine owns it).
type resetCheck struct {
	clusterID uint64
	// maxRev is the highest revision seen since the last list.
	maxRev int64
	// configCreated is the creation revision of <prefix>/config when it
	// was last seen (0 before it was seen).
	configCreated int64
}

// relisted records a fresh list at rev: after a reset, revisions start
// again below the ones seen before it.
func (r *resetCheck) relisted(rev int64) { r.maxRev = rev }

// observe takes one answer of etcd (its cluster ID, current revision and the
// config key's creation revision, 0 when absent) and, when it shows a reset,
// says why. applied is the last revision whose changes the watch applied.
// A config key that is deleted and not yet written again is no reset by
// itself: an etcd reset empties it, but so may an operator; the revision
// tells those apart, and a config written again at another revision shows a
// reset that the revision missed (a busy etcd past the old revision).
func (r *resetCheck) observe(clusterID uint64, rev, configCreated, applied int64) string {
	var why string
	switch seen := max(r.maxRev, applied); {
	case r.clusterID != 0 && clusterID != r.clusterID:
		why = fmt.Sprintf("cluster ID changed from %x to %x", r.clusterID, clusterID)
	case rev < seen:
		why = fmt.Sprintf("revision %d is below %d, already seen", rev, seen)
	case r.configCreated != 0 && configCreated != 0 && configCreated != r.configCreated:
		why = fmt.Sprintf("the config key was created anew at revision %d (before: %d)", configCreated, r.configCreated)
	}
	r.clusterID = clusterID
	r.maxRev = max(r.maxRev, rev)
	if configCreated != 0 {
		r.configCreated = configCreated
	}
	return why
}

// check asks etcd whether it was reset (errReset), and learns a few lease
// expiries while it is there. An etcd that cannot be reached is no reset.
func (w *watcher) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	resp, err := w.s.cli.Get(ctx, w.s.configKey(), clientv3.WithKeysOnly())
	if err != nil {
		return nil
	}
	var created int64
	if len(resp.Kvs) > 0 {
		created = resp.Kvs[0].CreateRevision
	}
	if why := w.reset.observe(resp.Header.ClusterId, resp.Header.Revision, created, w.rev); why != "" {
		return fmt.Errorf("%w: %s", errReset, why)
	}
	w.learnExpiries(ctx)
	return nil
}

// life is what a watcher knows of one lease key's lifetime: the etcd lease
// holding it and, once looked up, when that etcd lease ends.
type life struct {
	id    clientv3.LeaseID
	until time.Time // zero until looked up
}

// expiries is the lifetime of each lease key the watcher sent (reservations
// have none). A lease lost in a reset is kept until its expiry as known here.
type expiries struct {
	byKey map[string]life
	// unread: the watch started from a snapshot without etcd lease IDs;
	// the next check reads them.
	unread bool
}

func newExpiries(unread bool) expiries {
	return expiries{byKey: map[string]life{}, unread: unread}
}

// put records that key is held by etcd lease id (0: a reservation); a new
// etcd lease (a renewal) is looked up again.
func (e *expiries) put(key string, id clientv3.LeaseID) {
	if id == 0 {
		delete(e.byKey, key)
		return
	}
	if e.byKey[key].id != id {
		e.byKey[key] = life{id: id}
	}
}

func (e *expiries) forget(key string) { delete(e.byKey, key) }

// replace takes the etcd leases of a fresh list, keeping what was looked up
// of those that did not change.
func (e *expiries) replace(ids map[string]clientv3.LeaseID) {
	old := e.byKey
	e.byKey = make(map[string]life, len(ids))
	for k, id := range ids {
		if l := old[k]; l.id == id {
			e.byKey[k] = l
		} else {
			e.byKey[k] = life{id: id}
		}
	}
	e.unread = false
}

// until returns when key's lease expires, or fallback when that is unknown.
func (e *expiries) until(key string, fallback time.Time) time.Time {
	if l := e.byKey[key]; !l.until.IsZero() {
		return l.until
	}
	return fallback
}

// learnExpiries reads the etcd lease of every key when the watch started
// without them, then asks etcd for the remaining TTL of up to maxTTLLookups
// leases whose expiry is unknown. Errors leave the rest for the next check.
func (w *watcher) learnExpiries(ctx context.Context) {
	e := &w.expiry
	if e.unread {
		resp, err := w.s.cli.Get(ctx, w.s.subnetsKey(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return
		}
		for _, kv := range resp.Kvs {
			name := string(kv.Key[len(w.s.subnetsKey()):])
			if _, sent := w.known.Node(name); sent {
				if _, ok := e.byKey[name]; !ok && kv.Lease != 0 {
					e.byKey[name] = life{id: clientv3.LeaseID(kv.Lease)}
				}
			}
		}
		e.unread = false
	}
	looked := map[clientv3.LeaseID]time.Time{}
	for key, l := range e.byKey {
		if !l.until.IsZero() {
			continue
		}
		if _, ok := looked[l.id]; !ok {
			if len(looked) == maxTTLLookups {
				return
			}
			resp, err := w.s.cli.TimeToLive(ctx, l.id)
			if err != nil {
				return
			}
			// TTL is the remaining time in whole seconds, rounded down: the
			// lease ends within a second after. One etcd no longer has
			// (TTL -1) has ended: its key goes.
			looked[l.id] = w.s.now()
			if resp.TTL >= 0 {
				looked[l.id] = looked[l.id].Add(time.Duration(resp.TTL+1) * time.Second)
			}
		}
		l.until = looked[l.id]
		e.byKey[key] = l
	}
}
