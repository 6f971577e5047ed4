//go:build linux

package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/weft-net/weft/internal/lab"
)

// IperfPort is the port of the bench's iperf3 servers (iperf3's default).
const IperfPort = 5201

// Transfer is one iperf3 TCP run, as the receiver saw it.
type Transfer struct {
	BitsPerSecond float64
	Bytes         float64
	Retransmits   float64
	// BusyCPU is the machine's busy CPU time over the run, in seconds.
	BusyCPU float64
}

// CPUPerGB is the machine's CPU seconds per GB (10^9 bytes) moved.
func (t Transfer) CPUPerGB() float64 {
	if t.Bytes == 0 {
		return 0
	}
	return t.BusyCPU / (t.Bytes / 1e9)
}

// iperfResult is the part of `iperf3 -J` the bench reads.
type iperfResult struct {
	End struct {
		SumSent struct {
			Bytes         float64 `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
			Retransmits   float64 `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			Bytes         float64 `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// parseIperf reads the receiver's rate and bytes and the sender's
// retransmits from iperf3's JSON report.
func parseIperf(data []byte) (Transfer, error) {
	var r iperfResult
	if err := json.Unmarshal(data, &r); err != nil {
		return Transfer{}, fmt.Errorf("parse iperf3 report: %w", err)
	}
	if r.Error != "" {
		return Transfer{}, fmt.Errorf("iperf3: %s", r.Error)
	}
	t := Transfer{BitsPerSecond: r.End.SumReceived.BitsPerSecond, Bytes: r.End.SumReceived.Bytes,
		Retransmits: r.End.SumSent.Retransmits}
	if t.BitsPerSecond <= 0 || t.Bytes <= 0 {
		return Transfer{}, errors.New("iperf3 report: nothing received")
	}
	return t, nil
}

// Iperf runs iperf3 clients and servers in lab namespaces.
type Iperf struct {
	Proc Proc
}

// StartServer starts `iperf3 -s` in ns; the returned stop function ends it.
// The lab's removal also kills it, should the bench fail first.
func (ip Iperf) StartServer(ctx context.Context, ns string, addr netip.Addr) (stop func(), err error) {
	cmd := lab.Command(ctx, ns, "iperf3", "-s", "-B", addr.String(), "-p", strconv.Itoa(IperfPort))
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start iperf3 server in %s: %w", ns, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	return func() {
		_ = cmd.Process.Kill()
		<-done
	}, nil
}

// Run runs one client in ns to dst for d with streams parallel streams and
// measures the machine's busy CPU over it. Until the server listens the
// client is refused; it is retried for a few seconds.
func (ip Iperf) Run(ctx context.Context, ns string, dst netip.Addr, streams int, d time.Duration) (Transfer, error) {
	argv := []string{"iperf3", "-c", dst.String(), "-p", strconv.Itoa(IperfPort), "-J",
		"-t", strconv.Itoa(max(1, int(d.Round(time.Second)/time.Second))), "-P", strconv.Itoa(streams)}
	var lastErr error
	for attempt := range 20 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return Transfer{}, ctx.Err()
			case <-time.After(250 * time.Millisecond):
			}
		}
		t, err := ip.runOnce(ctx, ns, argv)
		if err == nil {
			return t, nil
		}
		lastErr = err
		if !strings.Contains(err.Error(), "connect") && !strings.Contains(err.Error(), "busy") {
			break
		}
	}
	return Transfer{}, fmt.Errorf("iperf3 %d streams from %s to %s: %w", streams, ns, dst, lastErr)
}

func (ip Iperf) runOnce(ctx context.Context, ns string, argv []string) (Transfer, error) {
	before, err := ip.Proc.BusyTicks()
	if err != nil {
		return Transfer{}, err
	}
	out, runErr := lab.Command(ctx, ns, argv...).Output()
	after, err := ip.Proc.BusyTicks()
	if err != nil {
		return Transfer{}, err
	}
	t, err := parseIperf(out)
	if err != nil {
		var ee *exec.ExitError
		if errors.As(runErr, &ee) && len(out) == 0 {
			return Transfer{}, fmt.Errorf("%w: %s", runErr, strings.TrimSpace(string(ee.Stderr)))
		}
		return Transfer{}, err
	}
	t.BusyCPU = CPUSeconds(after - before)
	return t, nil
}
