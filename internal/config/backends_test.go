package config

import (
	"bytes"
	"errors"
	"flag"
	"log/slog"
	"slices"
	"strings"
	"testing"
)

// fakeSettings are a backend type's node settings: one string flag.
type fakeSettings struct{ Path string }

func (s *fakeSettings) AddFlags(fs *flag.FlagSet) {
	fs.Var(pathValue{&s.Path}, "fake-path", "the fake type's data path")
}

type pathValue struct{ p *string }

func (v pathValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}

func (v pathValue) Set(s string) error {
	if s != "kernel" && s != "userspace" && s != "auto" {
		return errors.New("want auto, kernel or userspace")
	}
	*v.p = s
	return nil
}

func backends() map[string]FlagAdder {
	return map[string]FlagAdder{"fake": &fakeSettings{Path: "auto"}}
}

// A backend type's flags parse as weftd's own: from the command line, from
// FLANNELD_<NAME>, with the command line winning, errors naming the flag;
// they are listed by --help and logged with the options; weft status'
// Overlay knows them.
func TestBackendSettings(t *testing.T) {
	path := func(o Options) string { return o.Backends["fake"].(*fakeSettings).Path }
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"default", nil, nil, "auto"},
		{"flag", []string{"--fake-path=kernel"}, nil, "kernel"},
		{"environment", nil, []string{"FLANNELD_FAKE_PATH", "userspace"}, "userspace"},
		{"flag over environment", []string{"--fake-path", "kernel"}, []string{"FLANNELD_FAKE_PATH", "userspace"}, "kernel"},
	} {
		o, err := ParseOptions(tc.args, env(tc.env...), backends())
		if err != nil || path(o) != tc.want {
			t.Errorf("%s: ParseOptions = %+v, %v; want path %s", tc.name, o.Backends, err, tc.want)
		}
	}
	_, err := ParseOptions(nil, env("FLANNELD_FAKE_PATH", "ebpf"), backends())
	if err == nil || err.Error() != "FLANNELD_FAKE_PATH (--fake-path): want auto, kernel or userspace" || !errors.Is(err, ErrFlag) {
		t.Errorf("a bad value from the environment = %v", err)
	}
	if _, err := ParseOptions([]string{"--fake-path=kernel"}, env(), nil); err == nil || !strings.Contains(err.Error(), "fake-path") {
		t.Errorf("a type's flag without the types = %v, want an unknown flag", err)
	}

	var help bytes.Buffer
	Usage(&help, backends())
	if !strings.Contains(help.String(), "--fake-path\n") || !strings.Contains(help.String(), "[FLANNELD_FAKE_PATH]") {
		t.Errorf("--help does not list the type's flag:\n%s", help.String())
	}
	if !slices.Contains(EnvNames(backends()), "FLANNELD_FAKE_PATH") {
		t.Error("EnvNames does not list the type's flag's variable")
	}

	o, _ := ParseOptions([]string{"--fake-path=kernel"}, env(), backends())
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("starting", "options", &o)
	if !strings.Contains(buf.String(), "backend-settings=map[fake-path:kernel]") {
		t.Errorf("the options' log line lacks the type's settings: %s", buf.String())
	}

	got, err := Overlay([]string{"--fake-path", "kernel", "--ip-masq"}, []string{"--fake-path=userspace"}, backends())
	if want := []string{"--ip-masq", "--fake-path=userspace"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("Overlay = %q, %v; want %q", got, err, want)
	}
}
