package testenv

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// fatalRecorder is a testing.TB whose Fatalf records the message instead of
// stopping the test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Fatalf(format string, args ...any) { r.msg = fmt.Sprintf(format, args...) }

func TestScale(t *testing.T) {
	for _, tc := range []struct {
		env  string
		want time.Duration
		err  string
	}{
		{"", 30 * time.Second, ""},
		{"1", 30 * time.Second, ""},
		{"4", 2 * time.Minute, ""},
		{"2.5", 75 * time.Second, ""},
		{"0.5", 0, "want a number >= 1"},
		{"fast", 0, `WEFT_TEST_TIME_FACTOR="fast"`},
	} {
		t.Setenv(TimeFactorEnv, tc.env)
		r := &fatalRecorder{TB: t}
		got := Scale(r, 30*time.Second)
		if tc.err != "" {
			if !strings.Contains(r.msg, tc.err) {
				t.Errorf("%s=%q: failure %q, want one saying %q", TimeFactorEnv, tc.env, r.msg, tc.err)
			}
			continue
		}
		if r.msg != "" || got != tc.want {
			t.Errorf("%s=%q: Scale(30s) = %v (%q), want %v", TimeFactorEnv, tc.env, got, r.msg, tc.want)
		}
	}
}
