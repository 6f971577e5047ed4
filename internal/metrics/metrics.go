// Package metrics is weftd's Prometheus metrics, served on the health server
// at /metrics. Names, types and labels are a public contract
// (docs/observability.md lists them). Nothing here is a package global:
// weftd builds one Metrics with its own registry.
//
// The hot paths never take a lock for a metric: counters the reconciler and
// the userspace data path keep are atomics that a collector reads at scrape
// time, and the daemon's own counters and the histogram are client_golang's
// lock-free types. A scrape therefore never delays the reconciler.
package metrics

import (
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Ignored-lease reasons: a bounded set (weft_peer_leases_ignored_total).
const (
	ReasonBackendType = "backend-type" // another BackendType
	ReasonSelf        = "self"         // the node's own lease or public address
	ReasonUnusable    = "unusable"     // anything else the backend cannot use
)

// Metrics are weftd's metrics.
type Metrics struct {
	reg *prometheus.Registry

	Peers          *prometheus.GaugeVec
	LeasesIgnored  *prometheus.CounterVec
	Writes         *prometheus.CounterVec
	Repairs        *prometheus.CounterVec
	WriteErrors    prometheus.Counter
	LeaseToKernel  prometheus.Histogram
	LeaseExpiry    prometheus.Gauge
	LeaseRenewals  *prometheus.CounterVec
	dataPathSource func() *DataPath
	storeSource    func() (up bool, restarts uint64)
}

// LeaseToKernelBuckets are weft_lease_to_kernel_seconds' buckets: 100 µs to
// 10 s, a factor of about 2.15 apart (three per decade).
func LeaseToKernelBuckets() []float64 {
	return []float64{0.0001, 0.000215, 0.000464, 0.001, 0.00215, 0.00464, 0.01, 0.0215, 0.0464, 0.1, 0.215, 0.464, 1, 2.15, 4.64, 10}
}

// New builds the metrics for a weftd of the given version.
func New(version string) *Metrics {
	reg := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m := &Metrics{reg: reg}
	m.Peers = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "weft_peers",
		Help: "Peers whose kernel objects (or userspace peer entries) are programmed, by backend."}, []string{"backend"})
	m.LeasesIgnored = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_peer_leases_ignored_total",
		Help: "Peer leases this node's backend could not use, by reason (backend-type, self, unusable)."}, []string{"reason"})
	m.Writes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_reconcile_writes_total",
		Help: "Kernel and data-path objects written, by object (route, neigh, fdb, link, peer) and op (add, del)."}, []string{"object", "op"})
	m.Repairs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_reconcile_repairs_total",
		Help: "Objects someone else removed or changed that weft put back, by object."}, []string{"object"})
	m.WriteErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_reconcile_errors_total",
		Help: "Kernel writes that failed (each is retried)."})
	m.LeaseToKernel = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "weft_lease_to_kernel_seconds",
		Help:    "Time from a peer lease change arriving from the store to its kernel objects being written.",
		Buckets: LeaseToKernelBuckets()})
	m.LeaseExpiry = prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_lease_expiry_timestamp_seconds",
		Help: "When the node's own lease expires (Unix time); 0 for a lease that does not expire."})
	m.LeaseRenewals = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_lease_renewals_total",
		Help: "Renewals of the node's own lease, by result (success, failure)."}, []string{"result"})
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "weft_build_info",
		Help: "weftd's version and Go version; always 1."}, []string{"version", "goversion"})
	build.WithLabelValues(version, runtime.Version()).Set(1)
	for _, c := range []prometheus.Collector{m.Peers, m.LeasesIgnored, m.Writes, m.Repairs, m.WriteErrors, m.LeaseToKernel,
		m.LeaseExpiry, m.LeaseRenewals, build, storeCollector{m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		dataPathCollector{m}} {
		f(c)
	}
	for _, r := range []string{"success", "failure"} {
		m.LeaseRenewals.WithLabelValues(r)
	}
	for _, r := range []string{ReasonBackendType, ReasonSelf, ReasonUnusable} {
		m.LeasesIgnored.WithLabelValues(r)
	}
	for _, o := range []string{"route", "neigh", "fdb", "link", "peer"} {
		if o != "peer" { // userspace peer entries have nobody else to remove them
			m.Repairs.WithLabelValues(o)
		}
		for _, op := range []string{"add", "del"} {
			m.Writes.WithLabelValues(o, op)
		}
	}
	return m
}

// Handler serves the registry in the Prometheus text (or OpenMetrics)
// format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Timeout: 10 * time.Second})
}

// Registry is the metrics' registry (tests gather from it).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// SetStore makes the lease store's watch health part of every scrape; src
// is called at scrape time.
func (m *Metrics) SetStore(src func() (up bool, restarts uint64)) { m.storeSource = src }

type storeCollector struct{ m *Metrics }

func storeDescs() (up, restarts *prometheus.Desc) {
	return prometheus.NewDesc("weft_store_up", "1 while the lease store's watch is healthy, 0 while it is being re-established.", nil, nil),
		prometheus.NewDesc("weft_store_watch_restarts_total", "Times the lease store's watch was interrupted and resumed.", nil, nil)
}

func (c storeCollector) Describe(ch chan<- *prometheus.Desc) {
	u, r := storeDescs()
	ch <- u
	ch <- r
}

func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	up, restarts := false, uint64(0)
	if c.m.storeSource != nil {
		up, restarts = c.m.storeSource()
	}
	u, r := storeDescs()
	v := 0.0
	if up {
		v = 1
	}
	ch <- prometheus.MustNewConstMetric(u, prometheus.GaugeValue, v)
	ch <- prometheus.MustNewConstMetric(r, prometheus.CounterValue, float64(restarts))
}

// SetDataPath makes the userspace data path's counters part of every scrape;
// src is called at scrape time and may return nil (no userspace data path).
func (m *Metrics) SetDataPath(src func() *DataPath) { m.dataPathSource = src }

// DataPath are a userspace data path's counters at one moment.
type DataPath struct {
	Encap                string // udp, ipip
	RxPackets, TxPackets uint64
	RxBytes, TxBytes     uint64
	Drops                map[string]uint64 // by reason
}

type dataPathCollector struct{ m *Metrics }

func dataPathDescs() (packets, bytes, drops *prometheus.Desc) {
	return prometheus.NewDesc("weft_datapath_packets_total", "Packets through the userspace data path, by encapsulation and direction (in: from peers, out: to peers).", []string{"encap", "direction"}, nil),
		prometheus.NewDesc("weft_datapath_bytes_total", "Bytes of inner packets through the userspace data path, by encapsulation and direction.", []string{"encap", "direction"}, nil),
		prometheus.NewDesc("weft_datapath_drops_total", "Packets the userspace data path dropped, by encapsulation and reason (unknown-source, spoofed, malformed, no-route, send-error).", []string{"encap", "reason"}, nil)
}

func (c dataPathCollector) Describe(ch chan<- *prometheus.Desc) {
	p, b, d := dataPathDescs()
	ch <- p
	ch <- b
	ch <- d
}

func (c dataPathCollector) Collect(ch chan<- prometheus.Metric) {
	if c.m.dataPathSource == nil {
		return
	}
	dp := c.m.dataPathSource()
	if dp == nil {
		return
	}
	p, b, d := dataPathDescs()
	ch <- prometheus.MustNewConstMetric(p, prometheus.CounterValue, float64(dp.RxPackets), dp.Encap, "in")
	ch <- prometheus.MustNewConstMetric(p, prometheus.CounterValue, float64(dp.TxPackets), dp.Encap, "out")
	ch <- prometheus.MustNewConstMetric(b, prometheus.CounterValue, float64(dp.RxBytes), dp.Encap, "in")
	ch <- prometheus.MustNewConstMetric(b, prometheus.CounterValue, float64(dp.TxBytes), dp.Encap, "out")
	for reason, n := range dp.Drops {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(n), dp.Encap, reason)
	}
}
