//go:build linux

package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// health serves /healthz (always 200 while the process runs) and /readyz
// (200 once subnet.env is written, 503 before).
type health struct {
	ready   atomic.Bool
	reason  atomic.Value // string: why not ready
	metrics http.Handler // /metrics, when set
}

func (h *health) setReason(s string) { h.reason.Store(s) }

func (h *health) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if h.ready.Load() {
			fmt.Fprintln(w, "ready")
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		reason, _ := h.reason.Load().(string)
		fmt.Fprintln(w, "not ready:", reason)
	})
	if h.metrics != nil {
		mux.Handle("/metrics", h.metrics)
	}
	return mux
}

// serve listens on ip:port until ctx ends. It returns the listener's error at
// once (a port in use is a start-up failure) and then serves in the
// background.
func (h *health) serve(ctx context.Context, ip netip.Addr, port int, wg *sync.WaitGroup) (net.Addr, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip.String(), strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("health server: %w", err)
	}
	srv := &http.Server{Handler: h.handler(), ReadHeaderTimeout: 5 * time.Second}
	wg.Go(func() {
		<-ctx.Done()
		_ = srv.Close()
	})
	// Serve returns when ctx ends (ErrServerClosed) or the listener fails;
	// either way /healthz stops answering, which is what a prober acts on.
	wg.Go(func() { _ = srv.Serve(ln) })
	return ln.Addr(), nil
}
