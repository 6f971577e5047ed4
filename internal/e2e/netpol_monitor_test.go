//go:build linux

package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/lab"
)

// chainWatch records when `nft monitor` in a node's namespace reports each
// chain added or deleted. nft monitor may exit (when it cannot list the
// ruleset while weftd writes it); it is started again at once, and gen
// counts its starts, so that a trial can tell whether the monitor was up
// throughout (probe).
type chainWatch struct {
	t  *testing.T
	ns string

	mu   sync.Mutex
	seen map[string]time.Time // "add <table> <chain>", "delete <table> <chain>"
	gen  int
	errs []string // what the monitors that exited said
}

func watchChains(t *testing.T, ctx context.Context, ns string) *chainWatch {
	t.Helper()
	w := &chainWatch{t: t, ns: ns, seen: map[string]time.Time{}}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			w.monitor(ctx)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

// monitor runs one nft monitor until it exits.
func (w *chainWatch) monitor(ctx context.Context) {
	w.mu.Lock()
	w.gen++
	w.mu.Unlock()
	cmd := lab.Command(ctx, w.ns, "nft", "monitor", "chains")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		w.fail(err.Error())
		time.Sleep(100 * time.Millisecond)
		return
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		now := time.Now()
		// add chain inet <table> <name>
		if f := strings.Fields(sc.Text()); len(f) >= 5 && f[1] == "chain" {
			w.mu.Lock()
			w.seen[f[0]+" "+f[3]+" "+f[4]] = now
			w.mu.Unlock()
		}
	}
	err = cmd.Wait()
	if ctx.Err() == nil {
		w.fail(fmt.Sprintf("%v: %s", err, strings.TrimSpace(stderr.String())))
	}
}

func (w *chainWatch) fail(msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.errs = append(w.errs, msg)
}

func (w *chainWatch) at(event string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	at, ok := w.seen[event]
	return at, ok
}

func (w *chainWatch) generation() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.gen
}

// probe adds and deletes a chain in a table of its own (never weft's) in
// the node's namespace until the monitor reports it, and returns the
// monitor's generation then.
func (w *chainWatch) probe(t *testing.T, i int) int {
	t.Helper()
	name := fmt.Sprintf("probe%d", i)
	for {
		gen := w.generation()
		run(t, w.ns, "nft", fmt.Sprintf("add table inet weft-bench-probe; add chain inet weft-bench-probe %s; delete table inet weft-bench-probe", name))
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if _, ok := w.at("add weft-bench-probe " + name); ok {
				return gen
			}
			time.Sleep(5 * time.Millisecond)
		}
		if w.generation() == gen {
			t.Fatalf("%s: nft monitor is running but does not report a chain added", w.ns)
		}
		name += "x"
	}
}

// policyChain is the name weft gives a policy's ingress chain: "in-" and
// 12 hex digits of the SHA-256 of "namespace/name" (internal/netpol).
func policyChain(ns, name string) string {
	sum := sha256.Sum256([]byte(ns + "/" + name))
	return "in-" + hex.EncodeToString(sum[:6])
}
