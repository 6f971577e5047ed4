//go:build linux

package bench

import (
	"fmt"
	"image/color"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// ChartFile is the throughput chart's name in --out's directory.
const ChartFile = "throughput.png"

// WriteChart draws the pod-to-pod throughput of each backend as a ratio to
// the node-to-node baseline, 1 and 4 streams side by side, with the spread
// (min and max over the runs, divided by the baseline's median) as error
// bars, into a PNG at path.
func WriteChart(path string, r *Result) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("weft: pod-to-pod TCP throughput / node-to-node (%s)", r.Date.Format("2006-01-02"))
	p.Y.Label.Text = "ratio to the underlay (1 = bare node-to-node)"
	p.Y.Min, p.Y.Max = 0, 1.2
	w := vg.Points(18)
	var names []string
	for i, pick := range []func(DataPlane) Figure{func(d DataPlane) Figure { return d.TCP1 }, func(d DataPlane) Figure { return d.TCP4 }} {
		var vals plotter.Values
		names = names[:0]
		for _, d := range r.DataPlane {
			f := pick(d)
			vals = append(vals, f.Ratio)
			names = append(names, d.Backend)
		}
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return fmt.Errorf("chart: %w", err)
		}
		bars.LineStyle.Width = 0
		bars.Color = []color.Color{color.RGBA{R: 0x33, G: 0x66, B: 0xcc, A: 255}, color.RGBA{R: 0xee, G: 0x88, B: 0x22, A: 255}}[i]
		bars.Offset = w * vg.Length(2*i-1) / 2
		p.Add(bars)
		p.Legend.Add([]string{"1 stream", "4 streams"}[i], bars)
		p.Y.Max = max(p.Y.Max, maxOf(vals)*1.15)
	}
	one := plotter.NewFunction(func(float64) float64 { return 1 })
	one.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	p.Add(one)
	p.Legend.Top = true
	p.NominalX(names...)
	if err := p.Save(vg.Length(max(14, 4*len(names)))*vg.Centimeter, 10*vg.Centimeter, path); err != nil {
		return fmt.Errorf("save chart %s: %w", path, err)
	}
	return nil
}

func maxOf(vs plotter.Values) float64 {
	m := 0.0
	for _, v := range vs {
		m = max(m, v)
	}
	return m
}
