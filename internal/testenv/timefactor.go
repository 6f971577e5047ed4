package testenv

import (
	"os"
	"strconv"
	"testing"
	"time"
)

// TimeFactorEnv names the variable that stretches the time limits of the
// tests that read it (Scale): a number >= 1, 1 when unset. The kernel tier
// (make test-kernels) sets it for User-Mode Linux, where everything runs
// 5-20 times slower than on the host.
const TimeFactorEnv = "WEFT_TEST_TIME_FACTOR"

// TimeFactor returns WEFT_TEST_TIME_FACTOR, and fails t when it is not a
// number >= 1.
func TimeFactor(t testing.TB) float64 {
	t.Helper()
	v := os.Getenv(TimeFactorEnv)
	if v == "" {
		return 1
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 1 {
		t.Fatalf("%s=%q: want a number >= 1 (how many times slower than the host this machine runs)", TimeFactorEnv, v)
	}
	return f
}

// Scale returns d stretched by TimeFactor: a time limit that holds on the
// host, made to hold on a slower kernel too.
func Scale(t testing.TB, d time.Duration) time.Duration {
	t.Helper()
	return time.Duration(float64(d) * TimeFactor(t))
}
