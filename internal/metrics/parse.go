package metrics

import (
	"bytes"
	"fmt"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families is a parsed scrape, by metric name (weft status reads the local
// weftd's; tests compare scrapes with what they measure).
type Families map[string]*dto.MetricFamily

// ParseText parses a scrape in the Prometheus text format.
func ParseText(body []byte) (Families, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("parse /metrics: %w", err)
	}
	return fams, nil
}

// Value sums the samples of name whose labels include want: a counter's or
// gauge's value, a histogram's sample count. It is -1 when the family is
// missing.
func (f Families) Value(name string, want map[string]string) float64 {
	fam := f[name]
	if fam == nil {
		return -1
	}
	var sum float64
next:
	for _, m := range fam.Metric {
		for k, v := range want {
			found := false
			for _, l := range m.Label {
				found = found || l.GetName() == k && l.GetValue() == v
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum
}
