//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/cluster"
)

var startupRe = regexp.MustCompile(`msg="node is up".* startup=([0-9.]+)(ms|µs|s)`)

// BenchmarkWeftdProcess starts the real weftd binary in a lab node whose etcd
// holds N peer leases, and reports: time from exec to /readyz 200 (every
// route, neighbour and FDB entry programmed), the daemon's own start-up
// figure, its RSS, and the bytes it logged.
func BenchmarkWeftdProcess(b *testing.B) {
	for _, n := range []int{0, 5000} {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			needRoot(b)
			name, err := lab.RandomName("b")
			if err != nil {
				b.Fatal(err)
			}
			dir := b.TempDir()
			c, err := cluster.Up(context.Background(), cluster.Options{Lab: lab.Options{Name: name, Nodes: 1}, BinDir: bins.get(b), Dir: dir,
				NetConf: `{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}`})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = c.Down(context.Background()) })
			var kvs [][2]string
			for i := range n {
				v, _ := json.Marshal(map[string]any{"PublicIP": fmt.Sprintf("192.168.%d.%d", 101+i/250, 1+i%250), "PublicIPv6": nil,
					"BackendType": "vxlan", "BackendData": map[string]any{"VNI": 1, "VtepMAC": fmt.Sprintf("0a:00:00:00:%02x:%02x", byte(i>>8), byte(i))}})
				kvs = append(kvs, [2]string{fmt.Sprintf("%s/subnets/10.%d.%d.0-24", cluster.Prefix, (i+1)>>8, (i+1)&255), string(v)})
			}
			if err := c.PutLeased(context.Background(), kvs, time.Hour); err != nil {
				b.Fatal(err)
			}
			var wall, own time.Duration
			var rss, logBytes int64
			for b.Loop() {
				b.StopTimer()
				if err := c.KillWeftd(1, true); err != nil {
					b.Fatal(err)
				}
				// A fresh node state: no device, no routes, no log.
				_, _ = lab.Exec(context.Background(), c.NodeNS(1), "ip", "link", "del", "flannel.1")
				_ = os.Remove(c.LogFile(1))
				b.StartTimer()
				start := time.Now()
				if err := c.StartWeftd(1); err != nil {
					b.Fatal(err)
				}
				for ok := false; !ok; ok, _ = c.Ready(context.Background(), 1) {
					time.Sleep(2 * time.Millisecond)
					if time.Since(start) > 30*time.Second {
						b.Fatal("not ready")
					}
				}
				wall += time.Since(start)
				b.StopTimer()
				rss += vmRSS(b, c.Pid(1))
				logs, _ := os.ReadFile(c.LogFile(1))
				logBytes += int64(len(logs))
				own += parseStartup(b, string(logs))
				if got := strings.Count(run(b, c.NodeNS(1), "ip", "route", "show", "proto", "87"), "\n"); got != n {
					b.Fatalf("%d routes, want %d", got, n)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(wall.Microseconds())/float64(b.N)/1000, "ms/exec-to-ready")
			b.ReportMetric(float64(own.Microseconds())/float64(b.N)/1000, "ms/daemon-startup")
			b.ReportMetric(float64(rss)/float64(b.N)/(1<<20), "MiB-RSS")
			b.ReportMetric(float64(logBytes)/float64(b.N), "log-bytes")
		})
	}
}

func vmRSS(b *testing.B, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

func parseStartup(b *testing.B, logs string) time.Duration {
	m := startupRe.FindStringSubmatch(logs)
	if m == nil {
		b.Fatalf("no start-up line in:\n%s", logs)
	}
	d, err := time.ParseDuration(m[1] + m[2])
	if err != nil {
		b.Fatal(err)
	}
	return d
}
