package netpol

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// collector is the controller's metrics (weft_netpol_*): its own counters
// and histograms, and what a scrape reads from the last sync and check.
type collector struct {
	c             *Controller
	syncs         *prometheus.CounterVec
	syncSeconds   prometheus.Histogram
	changeSeconds prometheus.Histogram

	// Written by the controller's loop, read by scrapes.
	counters atomic.Pointer[map[string]counterOwner]
	drops    atomic.Pointer[map[string]uint64]
	stats    atomic.Pointer[SyncStats]

	enforcing, policies, pods, rules, elements, problems, repairs, cut, dropped *prometheus.Desc
}

type counterOwner struct{ namespace, name, dir string }

func newCollector(c *Controller) *collector {
	buckets := []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}
	m := &collector{c: c,
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_netpol_syncs_total",
			Help: "NetworkPolicy rule writes, by result (ok, error)."}, []string{"result"}),
		syncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "weft_netpol_sync_seconds",
			Help: "Time to compile the policies and write the differences to nftables.", Buckets: buckets}),
		changeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "weft_netpol_change_to_kernel_seconds",
			Help: "From a pod, namespace or policy change seen from the API to the rules in the kernel.", Buckets: buckets}),
		enforcing: prometheus.NewDesc("weft_netpol_enforcing",
			"1 when the kernel holds the rules of every policy for this node's pods; 0 when not (see weft status).", nil, nil),
		policies: prometheus.NewDesc("weft_netpol_policies", "NetworkPolicies selecting a pod of this node.", nil, nil),
		pods: prometheus.NewDesc("weft_netpol_pods", "This node's pods a policy selects, by direction.",
			[]string{"direction"}, nil),
		rules: prometheus.NewDesc("weft_netpol_rules", "Rules in weft's nftables table inet weft-netpol.", nil, nil),
		elements: prometheus.NewDesc("weft_netpol_set_elements",
			"Elements of the sets and verdict maps inside the rules of weft's nftables table inet weft-netpol.", nil, nil),
		problems: prometheus.NewDesc("weft_netpol_policy_problems",
			"Problems in policies (their bad parts match nothing).", nil, nil),
		repairs: prometheus.NewDesc("weft_netpol_repairs_total",
			"Objects of weft's nftables table found removed or changed by someone else, and put back.", nil, nil),
		cut: prometheus.NewDesc("weft_netpol_connections_cut_total",
			"Tracked connections deleted because a policy change denies them.", nil, nil),
		dropped: prometheus.NewDesc("weft_netpol_dropped_packets_total",
			"Packets dropped at pods a policy selects, by policy and direction (the kernel's counters, read every check).",
			[]string{"namespace", "policy", "direction"}, nil),
	}
	return m
}

func (m *collector) setRuleset(rs *Ruleset) {
	owners := map[string]counterOwner{}
	for key, info := range rs.Policies {
		ns, name := splitKey(key)
		for dir, counter := range info.Counters {
			owners[counter] = counterOwner{ns, name, dir.String()}
		}
	}
	m.counters.Store(&owners)
	if s := m.c.syncer; s != nil {
		st := s.Stats()
		m.stats.Store(&st)
	}
}

func (m *collector) setDrops(d map[string]uint64) {
	m.drops.Store(&d)
	if s := m.c.syncer; s != nil {
		st := s.Stats()
		m.stats.Store(&st)
	}
}

// Describe implements prometheus.Collector.
func (m *collector) Describe(ch chan<- *prometheus.Desc) {
	m.syncs.Describe(ch)
	m.syncSeconds.Describe(ch)
	m.changeSeconds.Describe(ch)
	for _, d := range []*prometheus.Desc{m.enforcing, m.policies, m.pods, m.rules, m.elements, m.problems, m.repairs, m.cut, m.dropped} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *collector) Collect(ch chan<- prometheus.Metric) {
	m.syncs.Collect(ch)
	m.syncSeconds.Collect(ch)
	m.changeSeconds.Collect(ch)
	st := m.c.State()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	enforcing := 0.0
	if st.Enforcing {
		enforcing = 1
	}
	gauge(m.enforcing, enforcing)
	gauge(m.policies, float64(st.Policies))
	gauge(m.pods, float64(st.Pods[Ingress]), "ingress")
	gauge(m.pods, float64(st.Pods[Egress]), "egress")
	gauge(m.rules, float64(st.Rules))
	gauge(m.elements, float64(st.Elements))
	gauge(m.problems, float64(len(st.PolicyError)))
	var stats SyncStats
	if p := m.stats.Load(); p != nil {
		stats = *p
	}
	ch <- prometheus.MustNewConstMetric(m.repairs, prometheus.CounterValue, float64(stats.Repairs))
	ch <- prometheus.MustNewConstMetric(m.cut, prometheus.CounterValue, float64(stats.Cut))
	owners, drops := m.counters.Load(), m.drops.Load()
	if owners == nil || drops == nil {
		return
	}
	for counter, o := range *owners {
		ch <- prometheus.MustNewConstMetric(m.dropped, prometheus.CounterValue, float64((*drops)[counter]), o.namespace, o.name, o.dir)
	}
}

// Collector returns the controller's metrics, for weftd's registry.
func (c *Controller) Collector() prometheus.Collector { return c.m }
