//go:build linux

package bench

import (
	"fmt"
	"io"
	"time"
)

// progress prints one line per step: its number, what it measures and the
// estimated time left. The estimate is the sum of the remaining steps'
// planned durations, scaled by how the finished steps compared with their
// plan once a tenth of it is done (a busy machine runs every step slower).
type progress struct {
	w       io.Writer
	now     func() time.Time
	start   time.Time
	planned time.Duration // sum of every step's plan
	done    time.Duration // plan of the steps started before the current one
	current time.Duration // plan of the current step
	step    int
	steps   int
}

func newProgress(w io.Writer, now func() time.Time, steps int, planned time.Duration) *progress {
	return &progress{w: w, now: now, start: now(), planned: planned, steps: steps}
}

// Step announces a step expected to take about plan.
func (p *progress) Step(plan time.Duration, format string, a ...any) {
	p.done += p.current
	p.current = plan
	p.step++
	fmt.Fprintf(p.w, "[%s] [%d/%d] %s (%s left)\n", p.now().Format("15:04:05"), p.step, max(p.steps, p.step),
		fmt.Sprintf(format, a...), fmtLeft(p.left()))
}

// left estimates the time until the last step ends.
func (p *progress) left() time.Duration {
	remaining := p.planned - p.done
	if remaining < 0 {
		remaining = p.current
	}
	elapsed := p.now().Sub(p.start)
	// One short step says little about the machine: the plan stands until
	// a tenth of it is done.
	if p.done > 0 && p.done >= p.planned/10 && elapsed > 0 {
		scale := float64(elapsed) / float64(p.done)
		remaining = time.Duration(float64(remaining) * min(max(scale, 0.5), 4))
	}
	return remaining
}

func fmtLeft(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("~%ds", int(d.Round(time.Second)/time.Second))
	}
	return fmt.Sprintf("~%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
}
