package testenv

import "testing"

func TestSelected(t *testing.T) {
	for _, tc := range []struct {
		env  string
		tier string
		want bool
	}{
		{"", TierPrivileged, true},
		{"", TierEndToEnd, true},
		{"privileged", TierPrivileged, true},
		{"privileged", TierEndToEnd, false},
		{"e2e", TierPrivileged, false},
		{"privileged,e2e", TierEndToEnd, true},
	} {
		t.Setenv(TiersEnv, tc.env)
		if got := Selected(tc.tier); got != tc.want {
			t.Errorf("%s=%q: Selected(%s) = %v, want %v", TiersEnv, tc.env, tc.tier, got, tc.want)
		}
	}
}
