//go:build linux

package tunnel

import "testing"

// Options are a flag value (--udp-tuning, --ipip-tuning): Set reads what
// String writes, and a bad list is refused, leaving the value as it was.
func TestOptionsFlag(t *testing.T) {
	for _, s := range []string{"", "queues=1", "queues=2,batch=8,novnet,nogso,nogro,nomerge", "nogro"} {
		var o Options
		if err := o.Set(s); err != nil {
			t.Fatalf("Set(%q) = %v", s, err)
		}
		if got := o.String(); got != s {
			t.Errorf("Set(%q).String() = %q", s, got)
		}
	}
	o := Options{Queues: 3}
	for _, bad := range []string{"queues=x", "fast", "batch="} {
		if err := o.Set(bad); err == nil || o.Queues != 3 {
			t.Errorf("Set(%q) = %v, value %+v; want an error and the value kept", bad, err, o)
		}
	}
}
