//go:build linux

package bench

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Result is everything one bench run measured (results.json, --json).
type Result struct {
	Date         time.Time      `json:"date"`
	Elapsed      string         `json:"elapsed"`
	Quick        bool           `json:"quick"`
	Machine      Machine        `json:"machine"`
	Settings     Settings       `json:"settings"`
	DataPlane    []DataPlane    `json:"data_plane"`
	ControlPlane []ControlPlane `json:"control_plane"`
	CNI          CNI            `json:"cni"`
	// Kube is the Kubernetes store's control plane per cluster size;
	// KubeSkipped says why it is empty.
	Kube        []KubePlane `json:"kube"`
	KubeSkipped string      `json:"kube_skipped,omitempty"`
}

// DataPlane holds one backend variant's figures; every baseline is the
// underlay between the same two nodes.
type DataPlane struct {
	Backend string  `json:"backend"`
	Variant Variant `json:"variant"`
	// TCP throughput in Gbit/s, pod to pod across nodes.
	TCP1 Figure `json:"tcp_1_stream"`
	TCP4 Figure `json:"tcp_4_streams"`
	// Retransmits per 1-stream run.
	Retransmits1 Figure `json:"retransmits_1_stream"`
	// RTT is the ICMP round trip in ms.
	RTT Figure `json:"rtt"`
	// CPU seconds (the whole machine) per GB moved.
	CPU1 Figure `json:"cpu_per_gb_1_stream"`
	CPU4 Figure `json:"cpu_per_gb_4_streams"`
}

// Figures lists the variant's figures in table order.
func (d DataPlane) Figures() []Figure {
	return []Figure{d.TCP1, d.TCP4, d.Retransmits1, d.RTT, d.CPU1, d.CPU4}
}

// ControlPlane holds the figures of one cluster size.
type ControlPlane struct {
	Peers int `json:"peers"`
	// Join: weftd exec to every route in the kernel, seconds.
	Join Figure `json:"join"`
	// Lease-to-route latency, ms.
	LeaseRouteP50 Figure `json:"lease_to_route_p50"`
	LeaseRouteP95 Figure `json:"lease_to_route_p95"`
	// RSS of the joined weftd (MiB) against an idle weftd's.
	RSS Figure `json:"rss"`
	// CPU seconds weftd used to join, against the direct writer's.
	CPU Figure `json:"cpu"`
}

// Figures lists the size's figures in table order.
func (c ControlPlane) Figures() []Figure {
	return []Figure{c.Join, c.LeaseRouteP50, c.LeaseRouteP95, c.RSS, c.CPU}
}

// CNI holds the plugin's latencies in ms against bridge called directly.
type CNI struct {
	Pods   int    `json:"pods"`
	AddP50 Figure `json:"add_p50"`
	AddP99 Figure `json:"add_p99"`
	DelP50 Figure `json:"del_p50"`
	DelP99 Figure `json:"del_p99"`
}

// Figures lists the CNI figures in table order.
func (c CNI) Figures() []Figure { return []Figure{c.AddP50, c.AddP99, c.DelP50, c.DelP99} }

// Settings records how the run was made.
type Settings struct {
	Runs        int     `json:"runs"`
	DurationSec float64 `json:"iperf_seconds"`
	Pings       int     `json:"pings"`
	Peers       []int   `json:"peers"`
	JoinRuns    int     `json:"join_runs"`
	Trials      int     `json:"lease_trials"`
	CNIPods     int     `json:"cni_pods"`
	KubeNodes   []int   `json:"kube_nodes,omitempty"`
}

func settingsOf(o Options) Settings {
	s := Settings{Runs: o.Runs, DurationSec: o.Duration.Seconds(), Pings: o.Pings, Peers: o.Peers, JoinRuns: o.JoinRuns,
		Trials: o.Trials, CNIPods: o.CNIPods, KubeNodes: o.KubeNodes}
	if o.NoKube {
		s.KubeNodes = nil
	}
	return s
}

// Machine describes where the run was made.
type Machine struct {
	Hostname string `json:"hostname"`
	Kernel   string `json:"kernel"`
	CPU      string `json:"cpu"`
	CPUs     int    `json:"cpus"`
	MemoryMB int64  `json:"memory_mb"`
	Go       string `json:"go"`
	// Load averages (1, 5, 15 min) at the start and the end: the machine
	// may be shared, and its load moves every figure.
	LoadStart string `json:"load_start"`
	LoadEnd   string `json:"load_end"`
}

// ReadMachine describes this machine.
func ReadMachine(p Proc) Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), LoadStart: readLoad(p)}
	m.Hostname, _ = os.Hostname()
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	m.CPU = procField(filepath.Join(p.Root, "cpuinfo"), "model name")
	if mem := procField(filepath.Join(p.Root, "meminfo"), "MemTotal"); mem != "" {
		if kb, err := strconv.ParseInt(strings.Fields(mem)[0], 10, 64); err == nil {
			m.MemoryMB = kb >> 10
		}
	}
	return m
}

func readLoad(p Proc) string {
	data, err := os.ReadFile(filepath.Join(p.Root, "loadavg"))
	if err != nil {
		return ""
	}
	f := strings.Fields(string(data))
	return strings.Join(f[:min(3, len(f))], " ")
}

// procField returns the value of the first "key: value" line of path.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
