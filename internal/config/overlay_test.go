package config

import (
	"errors"
	"slices"
	"testing"
)

func TestOverlay(t *testing.T) {
	base := []string{"--iface", "eth0", "--iface=eth1", "--ip-masq", "--etcd-endpoints", "http://10.0.0.1:2379",
		"--healthz-port=8471"}
	for _, tc := range []struct {
		name string
		over []string
		want []string
	}{
		{"nothing over", nil, base},
		{"a scalar wins", []string{"--etcd-endpoints=http://10.0.0.2:2379"},
			[]string{"--iface", "eth0", "--iface=eth1", "--ip-masq", "--healthz-port=8471", "--etcd-endpoints=http://10.0.0.2:2379"}},
		{"a repeated flag is replaced whole", []string{"-iface", "eth9"},
			[]string{"--ip-masq", "--etcd-endpoints", "http://10.0.0.1:2379", "--healthz-port=8471", "-iface", "eth9"}},
		{"a boolean turned off", []string{"--ip-masq=false"},
			[]string{"--iface", "eth0", "--iface=eth1", "--etcd-endpoints", "http://10.0.0.1:2379", "--healthz-port=8471", "--ip-masq=false"}},
	} {
		got, err := Overlay(base, tc.over, nil)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%s: Overlay = %q, %v; want %q", tc.name, got, err, tc.want)
		}
		if _, err := ParseOptions(got, func(string) (string, bool) { return "", false }, nil); err != nil {
			t.Errorf("%s: the overlaid command line does not parse: %v", tc.name, err)
		}
	}
	if _, err := Overlay(base, []string{"--no-such-flag"}, nil); !errors.Is(err, ErrFlag) {
		t.Errorf("Overlay with an unknown flag over = %v, want ErrFlag", err)
	}
	if _, err := Overlay([]string{"--etcd-endpoints"}, nil, nil); !errors.Is(err, ErrFlag) {
		t.Errorf("Overlay of a broken base = %v, want ErrFlag", err)
	}
}
