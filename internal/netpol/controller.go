package netpol

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/rest"
)

// Options configure a Controller.
type Options struct {
	// Config reaches the API server (get, list, watch on pods, namespaces
	// and networkpolicies; patch on nodes/status for the condition).
	Config *rest.Config
	// Node is this node's name: only its pods get rules.
	Node   string
	Logger *slog.Logger
	// Kernel is the nftables side; nil means NewKernel (nft in weftd's
	// network namespace).
	Kernel Kernel
	// Conntrack cuts connections a change denies; nil leaves them.
	Conntrack Conntrack
	// Check is the period of the kernel check (repairs, drop counters); 0
	// means 10 s.
	Check time.Duration
	// Settle is how long a change waits for more before the rules are
	// written, so that a burst is written once; 0 means 20 ms.
	Settle time.Duration
	// ProcSys is the root of the sysctls br_netfilter's setting is read
	// and written under; "" means /proc/sys.
	ProcSys string
	// LogDrops logs denied packets to the kernel log, rate-limited
	// (--network-policy-log-drops).
	LogDrops bool
	// BridgeMasquerades says that the CNI bridge plugin masquerades this
	// node's pod traffic to other nodes (weftd without --ip-masq writes
	// FLANNEL_IPMASQ=false, which turns the plugin's ipMasq on): policies
	// on other nodes then see this node's address, not its pods'.
	BridgeMasquerades bool
}

// Controller enforces the cluster's NetworkPolicies for one node's pods.
type Controller struct {
	o      Options
	log    *slog.Logger
	inf    *informers
	wakeCh chan struct{}
	cond   *conditionWriter
	state  atomic.Pointer[State]
	m      *collector

	// The loop's own.
	syncer   *Syncer
	changed  time.Time // the first change not yet written
	rulesErr error     // why the kernel does not hold the rules, or nil
	bridge   string    // what br_netfilter's setting leaves unpoliced, or ""
}

// State is what `weft status` and the metrics show.
type State struct {
	Enforcing   bool   // the kernel holds the rules of the cluster as last seen
	Problem     string // why not, or what is not enforced; "" when all is
	Policies    int    // policies selecting a pod of this node
	Pods        [2]int // this node's pods selected, by direction
	Rules       int
	Elements    int
	PolicyError []string // problems in policies (their bad parts match nothing)
	Synced      time.Time
}

// New returns a Controller; Run starts it.
func New(o Options) (*Controller, error) {
	if o.Check == 0 {
		o.Check = 10 * time.Second
	}
	if o.Settle == 0 {
		o.Settle = 20 * time.Millisecond
	}
	if o.ProcSys == "" {
		o.ProcSys = "/proc/sys"
	}
	c := &Controller{o: o, log: o.Logger, wakeCh: make(chan struct{}, 1)}
	inf, err := newInformers(o.Config, c.wake)
	if err != nil {
		return nil, err
	}
	c.inf = inf
	if c.cond, err = newConditionWriter(o.Config, o.Node); err != nil {
		return nil, err
	}
	c.m = newCollector(c)
	c.state.Store(&State{Problem: "waiting for the API server's pods, namespaces and policies"})
	return c, nil
}

// State returns the controller's state as of its last sync.
func (c *Controller) State() *State { return c.state.Load() }

func (c *Controller) wake() {
	select {
	case c.wakeCh <- struct{}{}:
	default:
	}
}

// Run enforces policy until ctx ends, and returns once everything it
// started has stopped. The rules stay in the kernel when it returns (a
// restarted weftd finds them and writes only what changed meanwhile).
func (c *Controller) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.inf.start(ctx, &wg)
	if err := c.waitSynced(ctx); err != nil {
		return nil
	}
	c.rulesErr = nil
	c.log.Info("network policy: pods, namespaces and policies listed; enforcing")
	if c.o.BridgeMasquerades {
		c.log.Error("network policy partly enforced", "problem", masqProblem)
	}
	k := c.o.Kernel
	check := time.NewTicker(c.o.Check)
	defer check.Stop()
	settle := time.NewTimer(0) // the first write, at once
	pending := true
	for {
		if k == nil {
			var err error
			if k, err = NewKernel(); err != nil {
				c.fail(ctx, fmt.Errorf("no nftables: %w", err))
			}
		}
		if k != nil && c.syncer == nil {
			c.syncer = NewSyncer(k, c.o.Conntrack, c.log)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-c.wakeCh:
			// The first change of a burst starts the wait; later ones do
			// not extend it, so a steady stream of changes is still written.
			if c.changed.IsZero() {
				c.changed = time.Now()
			}
			if !pending {
				settle.Reset(c.o.Settle)
				pending = true
			}
			continue
		case <-settle.C:
			pending = false
		case <-check.C:
			c.check(ctx)
		}
		if c.syncer != nil {
			c.sync(ctx)
		}
	}
}

// syncWait is how long the informers may take to list before weftd says
// that it cannot enforce yet, and why.
const syncWait = 30 * time.Second

// waitSynced waits until the informers have listed everything; when that
// takes longer than syncWait it reports the API server's answer (say, a
// ClusterRole without the rights) until they have.
func (c *Controller) waitSynced(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	deadline := time.Now().Add(syncWait)
	for !c.inf.synced() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if time.Now().After(deadline) {
			err := c.inf.probe(ctx)
			if err == nil {
				err = errors.New("the API server answers, but listing has not finished")
			}
			c.fail(ctx, fmt.Errorf("pods, namespaces and networkpolicies not listed after %v: %w", syncWait, err))
			deadline = time.Now().Add(syncWait)
		}
	}
	return nil
}

// sync compiles and writes the rules.
func (c *Controller) sync(ctx context.Context) {
	start := time.Now()
	rs, errs := c.inf.compile(c.o.Node)
	if c.o.LogDrops {
		rs.LogDrops()
	}
	err := c.syncer.Apply(ctx, rs)
	took := time.Since(start)
	if err != nil {
		c.m.syncs.WithLabelValues("error").Inc()
		c.fail(ctx, fmt.Errorf("the kernel refused the policy rules: %w", err))
		return
	}
	c.m.syncs.WithLabelValues("ok").Inc()
	c.m.syncSeconds.Observe(took.Seconds())
	if !c.changed.IsZero() {
		c.m.changeSeconds.Observe(time.Since(c.changed).Seconds())
		c.changed = time.Time{}
	}
	c.rulesErr = nil
	st := &State{Enforcing: true, Policies: len(rs.Policies), Synced: time.Now()}
	st.Pods = rs.Selected
	st.Rules, st.Elements = rs.Size()
	for _, e := range errs {
		st.PolicyError = append(st.PolicyError, e.Error())
	}
	prev := c.state.Load()
	if len(errs) > 0 && len(errs) != len(prev.PolicyError) {
		c.log.Warn("network policy: parts of policies match nothing", "problems", len(errs), "first", errs[0])
	}
	c.bridgeCheck()
	st.Problem = c.bridge
	if c.o.BridgeMasquerades {
		st.Problem = strings.TrimPrefix(st.Problem+"; "+masqProblem, "; ")
	}
	st.Enforcing = st.Problem == ""
	c.publish(ctx, st, rs)
}

// fail records that the kernel does not hold the rules: never silently.
func (c *Controller) fail(ctx context.Context, err error) {
	prev := c.state.Load()
	st := *prev
	st.Enforcing, st.Problem = false, err.Error()
	if c.rulesErr == nil || c.rulesErr.Error() != err.Error() {
		c.log.Error("network policy NOT enforced", "err", err)
	}
	c.rulesErr = err
	c.state.Store(&st)
	c.cond.set(ctx, c.log, false, "RulesNotInKernel", err.Error())
}

// publish stores the state and sets the Node condition.
func (c *Controller) publish(ctx context.Context, st *State, rs *Ruleset) {
	c.state.Store(st)
	c.m.setRuleset(rs)
	if st.Problem != "" {
		c.cond.set(ctx, c.log, false, "PartlyEnforced", st.Problem)
		return
	}
	// No counts in the message: it would patch the Node at every change.
	c.cond.set(ctx, c.log, true, "Enforcing", "the kernel holds the rules of every policy selecting this node's pods")
}

// check runs the syncer's periodic kernel check.
func (c *Controller) check(ctx context.Context) {
	if c.syncer == nil {
		return
	}
	n, err := c.syncer.Check(ctx)
	if n > 0 {
		c.log.Warn("network policy: rules removed or changed by someone else were put back", "objects", n)
	}
	if err != nil {
		c.fail(ctx, err)
	}
	c.m.setDrops(c.syncer.Drops())
}

const masqProblem = "weftd runs without --ip-masq, so the CNI bridge plugin masquerades this node's pod traffic " +
	"to other nodes: their policies see this node's address instead of its pods' (run weftd with --ip-masq, as kube-weft.yml does)"

// bridgeCheck makes bridged traffic (pods of this node talking to each
// other over the bridge) meet the forward hook: br_netfilter's
// bridge-nf-call-iptables and -ip6tables must be 1. It sets them when they
// are 0; when br_netfilter is not loaded it records what stays unpoliced.
func (c *Controller) bridgeCheck() {
	var problems []string
	for _, name := range []string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables"} {
		path := filepath.Join(c.o.ProcSys, "net", "bridge", name)
		b, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			problems = append(problems, "br_netfilter is not loaded (modprobe br_netfilter): traffic between pods of this node is not policed")
			break
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("read %s: %v", path, err))
			continue
		}
		if strings.TrimSpace(string(b)) == "1" {
			continue
		}
		if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
			problems = append(problems, fmt.Sprintf("net.bridge.%s is 0 and cannot be set (%v): traffic between pods of this node is not policed", name, err))
			continue
		}
		c.log.Info("network policy: set net.bridge." + name + "=1 so that traffic between pods of this node meets the policies")
	}
	p := strings.Join(problems, "; ")
	if p != c.bridge && p != "" {
		c.log.Error("network policy partly enforced", "problem", p)
	}
	c.bridge = p
}
