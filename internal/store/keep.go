package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/weft-net/weft/internal/lease"
)

// Clock is the time source of KeepLease.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// ConfigPollMax bounds the wait between two looks for the network
// configuration while KeepLease waits for it to be written again: the node
// republishes its lease within this long of the configuration's return.
const ConfigPollMax = 4 * time.Second

// RealClock is the system clock.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// After returns time.After(d).
func (RealClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// KeepOptions configure KeepLease.
type KeepOptions struct {
	// Request is used to acquire the lease again; its Previous subnets are
	// replaced by the lost lease's so the node keeps its subnet when free.
	Request AcquireRequest
	// Margin is how long before expiry the lease is renewed
	// (--subnet-lease-renew-margin); 0 means one hour.
	Margin time.Duration
	// RetryMin and RetryMax bound the backoff after errors; 0 means 1 s and
	// 1 min.
	RetryMin, RetryMax time.Duration
	// Clock defaults to RealClock; Logger to a discarding logger.
	Clock  Clock
	Logger *slog.Logger
	// Renewed, when set, is called after each successful renewal, and
	// RenewFailed after each failed one (it is retried).
	Renewed     func(lease.Lease)
	RenewFailed func(error)
	// Events, when set, are the lease changes KeepLease watches (the
	// caller's own watch, forwarded); otherwise it runs a watch of its own.
	// A daemon that already watches every lease passes them on instead of
	// holding a second copy of all of them.
	Events <-chan []lease.Event
}

func (o *KeepOptions) defaults() {
	if o.Margin <= 0 {
		o.Margin = time.Hour
	}
	if o.RetryMin <= 0 {
		o.RetryMin = time.Second
	}
	if o.RetryMax <= 0 {
		o.RetryMax = time.Minute
	}
	if o.Clock == nil {
		o.Clock = RealClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// KeepLease keeps own alive until ctx ends: it renews it Margin before it
// expires (retrying with backoff on errors), and when the lease is deleted,
// expires, is taken over or is lost in a store reset (lease.Lost), it
// acquires a lease again (the same subnet when free) and sends the new lease
// to out. Before acquiring it waits for the store's network configuration:
// a store restarted from an empty data directory has none until an operator
// writes it again, and KeepLease polls for it (backing off to at most
// ConfigPollMax) rather than giving up. It returns ctx.Err() when ctx ends,
// or an error wrapping ErrNoFreeSubnet when it cannot get a lease back; the
// daemon must then exit non-zero.
func KeepLease(ctx context.Context, s Store, own lease.Lease, opts KeepOptions, out chan<- lease.Lease) error {
	opts.defaults()
	k := &keeper{s: s, opts: opts, own: own, out: out, log: opts.Logger.With("component", "keeplease")}
	return k.run(ctx)
}

type keeper struct {
	s    Store
	opts KeepOptions
	own  lease.Lease
	out  chan<- lease.Lease
	log  *slog.Logger

	events   <-chan []lease.Event
	ownWatch chan []lease.Event // the watch's channel when KeepLease runs its own
	watchCh  chan error
}

func (k *keeper) run(ctx context.Context) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	k.watchCh = make(chan error, 1)
	if k.opts.Events != nil {
		k.events = k.opts.Events
	} else {
		k.ownWatch = make(chan []lease.Event, 16)
		k.events = k.ownWatch
		go func() { k.watchCh <- k.s.WatchLeases(wctx, Snapshot{}, k.ownWatch) }()
	}
	backoff := k.opts.RetryMin
	var retry <-chan time.Time
	for {
		var renew <-chan time.Time
		if retry != nil {
			renew = retry
		} else if !k.own.Reservation && !k.own.Expiration.IsZero() {
			wait := max(k.own.Expiration.Add(-k.opts.Margin).Sub(k.opts.Clock.Now()), k.opts.RetryMin)
			renew = k.opts.Clock.After(wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case batch := <-k.events:
			if !k.touched(batch) {
				continue
			}
		case err := <-k.watchCh:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			k.log.Warn("lease watch ended, restarting", "err", err)
			go func() {
				select {
				case <-k.opts.Clock.After(backoff):
				case <-wctx.Done():
				}
				k.watchCh <- k.s.WatchLeases(wctx, Snapshot{}, k.ownWatch)
			}()
			continue
		case <-renew:
			retry = nil
			// A touched lease is checked by renewing it too.
		}
		if err := k.renew(ctx); err != nil {
			if !errors.Is(err, ErrLeaseNotFound) {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				k.log.Warn("renew lease failed, retrying", "lease", k.own.Key(), "err", err, "in", backoff)
				if k.opts.RenewFailed != nil {
					k.opts.RenewFailed(err)
				}
				retry = k.opts.Clock.After(backoff)
				backoff = min(2*backoff, k.opts.RetryMax)
				continue
			}
		} else {
			backoff = k.opts.RetryMin
			continue
		}
		if err := k.reacquire(ctx); err != nil {
			return err
		}
		backoff = k.opts.RetryMin
	}
}

// touched reports whether batch removes the own lease (deleted, expired or
// lost in a store reset) or gives its key to another node; KeepLease then
// confirms by renewing, since the event may be older than the lease it holds
// now.
func (k *keeper) touched(batch []lease.Event) bool {
	for _, ev := range batch {
		if ev.Lease.Key() != k.own.Key() {
			continue
		}
		if ev.Type != lease.Added || ev.Lease.Attrs.PublicIP != k.own.Attrs.PublicIP ||
			ev.Lease.Attrs.PublicIPv6 != k.own.Attrs.PublicIPv6 {
			return true
		}
	}
	return false
}

func (k *keeper) renew(ctx context.Context) error {
	l, err := k.s.RenewLease(ctx, k.own)
	if err != nil {
		return err
	}
	k.own = l
	k.log.Debug("lease renewed", "lease", l.Key(), "expires", l.Expiration)
	if k.opts.Renewed != nil {
		k.opts.Renewed(l)
	}
	return nil
}

// reacquire gets a lease back after the own one was lost, retrying transient
// errors, and reports it on out.
func (k *keeper) reacquire(ctx context.Context) error {
	k.log.Warn("own lease lost, acquiring again", "lease", k.own.Key())
	req := k.opts.Request
	req.Attrs = k.own.Attrs
	req.Previous, req.PreviousIPv6 = k.own.Subnet, k.own.IPv6Subnet
	backoff := k.opts.RetryMin
	for {
		if err := k.waitConfig(ctx); err != nil {
			return err
		}
		l, err := k.s.AcquireLease(ctx, req)
		if err == nil {
			k.own = l
			k.log.Info("lease acquired again", "lease", l.Key())
			select {
			case k.out <- l:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrNoFreeSubnet) {
			return fmt.Errorf("acquire lease again after losing %s: %w", k.own.Key(), err)
		}
		k.log.Warn("acquire lease failed, retrying", "err", err, "in", backoff)
		select {
		case <-k.opts.Clock.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(2*backoff, k.opts.RetryMax)
	}
}

// waitConfig returns once the store holds a network configuration, polling
// with backoff (at most ConfigPollMax apart) while it has none or cannot be
// read; it returns ctx.Err() when ctx ends first.
func (k *keeper) waitConfig(ctx context.Context) error {
	backoff := k.opts.RetryMin
	for logged := false; ; {
		_, err := k.s.NetworkConfig(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := min(backoff, ConfigPollMax)
		if !logged || !errors.Is(err, ErrNoConfig) {
			k.log.Warn("waiting for the network configuration before acquiring the lease again",
				"lease", k.own.Key(), "err", err, "in", wait)
			logged = true
		}
		select {
		case <-k.opts.Clock.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(2*backoff, k.opts.RetryMax)
	}
}
