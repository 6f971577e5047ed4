package etcd

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weft-net/weft/internal/lease"
)

const faultNetConf = `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`

// op is one change a writer makes; want is the event it must produce.
type op struct {
	name   string
	value  string // "" deletes
	expect string
}

// ops returns n changes on a few keys, each a real change: every put
// carries a new value and deletes only hit existing keys.
func ops(from, n int) []op {
	var out []op
	for i := from; i < from+n; i++ {
		name := fmt.Sprintf("10.5.%d.0-24", 1+i%7)
		if i%5 == 4 {
			out = append(out, op{name: name})
			continue
		}
		out = append(out, op{name: name, value: fmt.Sprintf(`{"PublicIP":"192.168.1.%d","BackendType":"vxlan","BackendData":{"Seq":%d}}`, 1+i%7, i)})
	}
	// Fix expectations: a delete of a missing key produces nothing, so skip it.
	present := map[string]bool{}
	var kept []op
	for _, o := range out {
		switch {
		case o.value == "" && !present[o.name]:
			continue
		case o.value == "":
			present[o.name] = false
			o.expect = "removed " + o.name
		default:
			present[o.name] = true
			o.expect = "added " + o.name
		}
		kept = append(kept, o)
	}
	return kept
}

// apply runs ops through cli, retrying each until it is committed once.
func apply(t *testing.T, cli *clientv3.Client, prefix string, list []op) {
	t.Helper()
	for _, o := range list {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			var err error
			if o.value == "" {
				_, err = cli.Delete(ctx, prefix+"/subnets/"+o.name)
			} else {
				_, err = cli.Put(ctx, prefix+"/subnets/"+o.name, o.value)
			}
			cancel()
			if err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond) // a retried write may repeat: values differ, so a repeat is a no-op put
		}
	}
}

// collect reads events until want have arrived, failing on a mismatch.
func collect(t *testing.T, ch <-chan []lease.Event, want []op, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	i := 0
	for i < len(want) {
		select {
		case b := <-ch:
			for _, ev := range b {
				got := ev.Type.String() + " " + ev.Lease.Key()
				if i >= len(want) || got != want[i].expect {
					t.Fatalf("event %d: got %s, want %v", i, got, want[min(i, len(want)-1)].expect)
				}
				i++
			}
		case <-deadline:
			t.Fatalf("got %d of %d events", i, len(want))
		}
	}
	select {
	case b := <-ch:
		t.Fatalf("extra events after the expected ones: %v", b)
	case <-time.After(500 * time.Millisecond):
	}
}

func watchAll(t *testing.T, s *Store) <-chan []lease.Event {
	ch := make(chan []lease.Event, 4096)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	snap, err := s.ListLeases(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	go func() { defer close(done); _ = s.WatchLeases(ctx, snap, ch) }()
	t.Cleanup(func() { cancel(); <-done })
	return ch
}

func TestFaultMemberLossDuringWatch(t *testing.T) {
	c := startEmbedded(t, 3)
	h := newHarness(t, c.Endpoints())
	h.SetConfig(t, faultNetConf)
	ch := watchAll(t, h.newStore(t, quiet()))
	want := ops(0, 120)
	apply(t, h.cli, h.prefix, want[:60])
	if err := c.Stop(0); err != nil {
		t.Fatal(err)
	}
	apply(t, h.cli, h.prefix, want[60:])
	collect(t, ch, want, 30*time.Second)
}

func TestFaultAllMembersDown(t *testing.T) {
	if testing.Short() {
		t.Skip("10 s outage; skipped with -short")
	}
	c := startEmbedded(t, 3)
	h := newHarness(t, c.Endpoints())
	h.SetConfig(t, faultNetConf)
	ch := watchAll(t, h.newStore(t, quiet()))
	want := ops(0, 80)
	apply(t, h.cli, h.prefix, want[:40])
	for i := range c.Size() {
		if err := c.Stop(i); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(10 * time.Second)
	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	apply(t, h.cli, h.prefix, want[40:])
	collect(t, ch, want, 60*time.Second)
}

// proxy forwards TCP to target until Cut, which drops every connection and
// refuses new ones until Restore, or Freeze, which turns it into a black
// hole: connections stay open and new ones are accepted, but what is sent
// either way is dropped, as a firewall or a vanished host does, until
// Restore.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	frozen atomic.Bool
	conns  []net.Conn
}

// Freeze drops everything sent on the proxied connections until Restore.
func (p *proxy) Freeze() { p.frozen.Store(true) }

// pipe copies src to dst, dropping what arrives while the proxy is frozen.
func (p *proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.frozen.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.Cut() })
	go p.serve()
	return p
}

func (p *proxy) addr() string { return "http://" + p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go p.pipe(u, c)
		go p.pipe(c, u)
	}
}

func (p *proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
	p.frozen.Store(false)
}

// A connection that silently stops carrying packets is noticed by the
// client's keepalive: the watch is reported down once a ping goes
// unanswered (gRPC pings every 10 s at the most often, so within 10 s plus
// the answer timeout), and once the path is back every lease written
// meanwhile arrives. Without
// the keepalive the watch waits on the dead connection for ever, reported
// up.
func TestFaultBlackholedConnection(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out keepalive timeouts; skipped with -short")
	}
	c := startEmbedded(t, 1)
	h := newHarness(t, c.Endpoints())
	h.SetConfig(t, faultNetConf)
	p := newProxy(t, c.Endpoints()[0][len("http://"):])
	const keepAlive = 2 * time.Second
	s, err := New(Options{Endpoints: []string{p.addr()}, Prefix: h.prefix, Logger: quiet(), KeepAlive: keepAlive,
		ResetCheckEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ch := watchAll(t, s)
	want := ops(0, 40)
	apply(t, h.cli, h.prefix, want[:20])
	collect(t, ch, want[:20], 30*time.Second)
	if !s.health.Up() {
		t.Fatal("the watch is not up before the black hole")
	}
	p.Freeze()
	frozen := time.Now()
	for s.health.Up() {
		if time.Since(frozen) > 10*time.Second+5*keepAlive {
			t.Fatalf("the watch still reports up %v into the black hole (keepalive %v)", time.Since(frozen).Round(time.Millisecond), keepAlive)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("down %v after the black hole began (keepalive %v)", time.Since(frozen).Round(time.Millisecond), keepAlive)
	apply(t, h.cli, h.prefix, want[20:])
	p.Restore()
	collect(t, ch, want[20:], 30*time.Second)
}

func TestFaultCompactionDuringDisconnect(t *testing.T) {
	c := startEmbedded(t, 1)
	h := newHarness(t, c.Endpoints())
	h.SetConfig(t, faultNetConf)
	p := newProxy(t, c.Endpoints()[0][len("http://"):])
	s, err := New(Options{Endpoints: []string{p.addr()}, Prefix: h.prefix, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	before := ops(0, 21) // keys 10.5.1..7 present or not
	apply(t, h.cli, h.prefix, before)
	ch := watchAll(t, s)
	p.Cut()
	// While the watcher is away: two adds, two deletes, one change, then compaction.
	apply(t, h.cli, h.prefix, []op{
		{name: "10.5.20.0-24", value: `{"PublicIP":"192.168.2.20"}`},
		{name: "10.5.21.0-24", value: `{"PublicIP":"192.168.2.21"}`},
		{name: "10.5.2.0-24"}, {name: "10.5.3.0-24"},
		{name: "10.5.4.0-24", value: `{"PublicIP":"192.168.2.4"}`},
		{name: "10.5.22.0-24", value: `{"PublicIP":"192.168.2.22"}`}, {name: "10.5.22.0-24"}, // never seen
	})
	h.Compact(t)
	p.Restore()
	collect(t, ch, []op{
		{expect: "added 10.5.20.0-24"}, {expect: "added 10.5.21.0-24"}, {expect: "added 10.5.4.0-24"},
		{expect: "removed 10.5.2.0-24"}, {expect: "removed 10.5.3.0-24"},
	}, 30*time.Second)
	// And the watch goes on live.
	apply(t, h.cli, h.prefix, []op{{name: "10.5.20.0-24"}})
	collect(t, ch, []op{{expect: "removed 10.5.20.0-24"}}, 15*time.Second)
}
