//go:build linux

package bench

import (
	"math"
	"slices"
	"time"
)

// Stat summarises repeated measurements of one quantity: the median and the
// spread (min and max) over N samples. A percentile figure (p50, p95, p99 of
// many samples) sets Median, Min and Max to the percentile itself.
type Stat struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
}

// Summarise returns the median and range of xs.
func Summarise(xs []float64) Stat {
	if len(xs) == 0 {
		return Stat{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stat{Median: med, Min: s[0], Max: s[len(s)-1], N: len(s)}
}

// Percentile returns the p-th percentile (nearest rank) of xs as a Stat.
func Percentile(xs []float64, p int) Stat {
	if len(xs) == 0 {
		return Stat{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	rank := (p*len(s) + 99) / 100 // ceil(p/100 * n)
	v := s[max(rank-1, 0)]
	return Stat{Median: v, Min: v, Max: v, N: len(s)}
}

// What each baseline is, as results.json's baseline_is says and the table's
// footer lists.
const (
	baseUnderlay   = "the same test node to node over the underlay addresses, interleaved run by run"
	baseJoin       = "the same FDB entries, neighbours and routes written directly with batched netlink"
	baseLeaseRoute = "the etcd put's round trip plus a direct netlink route write, seen by the same subscription"
	baseRSS        = "an idle weftd on the same node (2 peers)"
	baseCPU        = "the direct netlink writer's CPU for the same objects"
	baseCNI        = "the bridge plugin called directly with the delegate configuration weft builds"
)

// Figure is one measured quantity next to its baseline from the same run.
type Figure struct {
	Name     string `json:"name"`
	Unit     string `json:"unit"`
	Value    Stat   `json:"value"`
	Baseline Stat   `json:"baseline"`
	// BaselineIs says what the baseline measured, in the same run (e.g.
	// "node to node over the underlay", "the same routes written directly
	// with batched netlink").
	BaselineIs string `json:"baseline_is"`
	// Ratio is Value.Median / Baseline.Median (0 when the baseline is 0).
	Ratio float64 `json:"ratio"`
	// Better says which direction is good: "higher" or "lower".
	Better string `json:"better"`
}

// NewFigure builds a Figure and its ratio; baselineIs names the baseline.
func NewFigure(name, unit, better, baselineIs string, value, baseline Stat) Figure {
	f := Figure{Name: name, Unit: unit, Value: value, Baseline: baseline, BaselineIs: baselineIs, Better: better}
	if baseline.Median != 0 && !math.IsNaN(value.Median) {
		f.Ratio = value.Median / baseline.Median
	}
	return f
}

// ms converts durations to milliseconds.
func ms(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d) / float64(time.Millisecond)
	}
	return out
}
