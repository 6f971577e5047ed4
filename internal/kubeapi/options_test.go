//go:build linux

package kubeapi

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeBins makes three executable files standing in for the binaries.
func fakeBins(t *testing.T) (string, Bins) {
	dir := t.TempDir()
	for _, n := range []string{"kube-apiserver", "kube-controller-manager", "kubectl"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := findBinaries(dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return dir, b
}

func TestFindBinaries(t *testing.T) {
	dir, want := fakeBins(t)
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == EnvBinDir {
				return v
			}
			return ""
		}
	}
	noHome := func() (string, error) { return "", errors.New("no home") }
	if got, err := findBinaries("", env(dir), noHome); err != nil || got != want {
		t.Errorf("from %s: %+v, %v; want %+v", EnvBinDir, got, err, want)
	}
	home := func() (string, error) { return "/nonexistent-home", nil }
	_, err := findBinaries("", env(""), home)
	if !errors.Is(err, ErrNoBinaries) || !strings.Contains(err.Error(), "make kube-bins") ||
		!strings.Contains(err.Error(), "/nonexistent-home/.cache/weft/kube-"+Version) {
		t.Errorf("missing default dir: %v", err)
	}
	if err := os.Chmod(want.Kubectl, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := findBinaries(dir, nil, nil); !errors.Is(err, ErrNoBinaries) {
		t.Errorf("non-executable kubectl: %v", err)
	}
}

func TestOptionsDefaults(t *testing.T) {
	_, bins := fakeBins(t)
	o, err := Options{Dir: t.TempDir(), EtcdURL: "http://127.0.0.1:2379", Bins: bins}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if o.BindAddress.String() != "127.0.0.1" || joinPrefixes(o.ClusterCIDRs) != "10.244.0.0/16" ||
		joinPrefixes(o.ServiceCIDRs) != "10.96.0.0/12" || !strings.HasPrefix(o.EtcdPrefix, "/weft-kubeapi-") ||
		len(o.Controllers) == 0 || o.Logger == nil || o.StartTimeout == 0 {
		t.Errorf("defaults: %+v", o)
	}
	o2, _ := Options{Dir: "d", EtcdURL: "e", Bins: bins}.withDefaults()
	if o2.EtcdPrefix == o.EtcdPrefix {
		t.Errorf("two control planes share etcd prefix %s", o.EtcdPrefix)
	}
	dual, err := Options{Dir: "d", EtcdURL: "e", Bins: bins, ClusterCIDRs: prefixes("10.244.0.0/16", "fd00:244::/56")}.withDefaults()
	if err != nil || joinPrefixes(dual.ServiceCIDRs) != "10.96.0.0/12,fd00:10:96::/112" {
		t.Errorf("dual-stack service CIDRs: %v, %v", dual.ServiceCIDRs, err)
	}
}

func TestOptionsInvalid(t *testing.T) {
	_, bins := fakeBins(t)
	ok := Options{Dir: "d", EtcdURL: "e", Bins: bins}
	for name, mod := range map[string]func(*Options){
		"no dir":           func(o *Options) { o.Dir = "" },
		"no etcd":          func(o *Options) { o.EtcdURL = "" },
		"missing binary":   func(o *Options) { o.Bins.Kubectl += ".missing" },
		"unspecified":      func(o *Options) { o.BindAddress = netip.IPv4Unspecified() },
		"two IPv4":         func(o *Options) { o.ClusterCIDRs = prefixes("10.1.0.0/16", "10.2.0.0/16") },
		"not masked":       func(o *Options) { o.ClusterCIDRs = prefixes("10.1.2.3/16") },
		"mask count":       func(o *Options) { o.NodeCIDRMaskSizes = []int{24, 64} },
		"mask too small":   func(o *Options) { o.NodeCIDRMaskSizes = []int{16} },
		"mask too large":   func(o *Options) { o.NodeCIDRMaskSizes = []int{33} },
		"service 3 nets":   func(o *Options) { o.ServiceCIDRs = prefixes("10.96.0.0/12", "fd00::/112", "10.0.0.0/24") },
		"service v4 twice": func(o *Options) { o.ServiceCIDRs = prefixes("10.96.0.0/12", "10.0.0.0/24") },
	} {
		o := ok
		mod(&o)
		if _, err := o.withDefaults(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestMaskSizeArgs(t *testing.T) {
	for _, tc := range []struct {
		cidrs []netip.Prefix
		sizes []int
		want  []string
	}{
		{prefixes("10.244.0.0/16"), nil, nil},
		{prefixes("10.244.0.0/16"), []int{26}, []string{"--node-cidr-mask-size=26"}},
		{prefixes("fd00::/56"), []int{64}, []string{"--node-cidr-mask-size=64"}},
		{prefixes("fd00::/56", "10.244.0.0/16"), []int{64, 24},
			[]string{"--node-cidr-mask-size-ipv6=64", "--node-cidr-mask-size-ipv4=24"}},
	} {
		if got := maskSizeArgs(Options{ClusterCIDRs: tc.cidrs, NodeCIDRMaskSizes: tc.sizes}); !slices.Equal(got, tc.want) {
			t.Errorf("%v %v: %q, want %q", tc.cidrs, tc.sizes, got, tc.want)
		}
	}
}

func TestPKI(t *testing.T) {
	dir := t.TempDir()
	o := Options{BindAddress: netip.MustParseAddr("192.168.100.2"), ServiceCIDRs: prefixes("10.96.0.0/12", "fd00:10:96::/112")}
	p, err := newPKI(dir, o.servingHosts())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(p.caCert)
	serving := readCert(t, p.path(servingCert))
	for _, host := range []string{"192.168.100.2", "127.0.0.1", "10.96.0.1", "fd00:10:96::1", "kubernetes.default.svc"} {
		if _, err := serving.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
			t.Errorf("serving certificate for %s: %v", host, err)
		}
	}
	admin := readCert(t, p.path(adminCertFile))
	if _, err := admin.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("admin certificate: %v", err)
	}
	if !slices.Equal(admin.Subject.Organization, []string{"system:masters"}) {
		t.Errorf("admin organizations %v", admin.Subject.Organization)
	}
	if kcm := readCert(t, p.path(kcmCertFile)); kcm.Subject.CommonName != "system:kube-controller-manager" {
		t.Errorf("controller-manager user %q", kcm.Subject.CommonName)
	}
	for _, f := range []string{caKeyFile, servingKey, saKeyFile, adminKeyFile, kcmKeyFile} {
		if st, err := os.Stat(p.path(f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want mode 0600", f, st.Mode(), err)
		}
	}
	if _, err := p.clientTLS(); err != nil {
		t.Error(err)
	}

	kc := filepath.Join(dir, "sa.kubeconfig")
	if err := p.tokenKubeconfig(kc, "https://[fd00::2]:6443", "system:serviceaccount:a:b", "tok.en-1"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(kc)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, want := range []string{`server: "https://[fd00::2]:6443"`, "    token: tok.en-1\n",
		"certificate-authority-data: " + base64.StdEncoding.EncodeToString(p.caPEM), "current-context: weft"} {
		if !strings.Contains(text, want) {
			t.Errorf("kubeconfig lacks %q:\n%s", want, text)
		}
	}
}

func TestLogTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.log")
	var b strings.Builder
	for i := range 1000 {
		b.WriteString(strings.Repeat("x", i%50) + "\n")
	}
	b.WriteString("the last line\n")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	got := logTail(path)
	if !strings.HasSuffix(got, "the last line") || strings.Count(got, "\n") != 25 {
		t.Errorf("tail: %q", got)
	}
	if !strings.Contains(logTail(filepath.Join(t.TempDir(), "none")), "no log") {
		t.Error("missing log not reported")
	}
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
