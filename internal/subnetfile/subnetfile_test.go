package subnetfile

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func dualStack() Env {
	return Env{
		Networks:     []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
		Subnet:       netip.MustParsePrefix("10.244.1.1/24"),
		IPv6Networks: []netip.Prefix{netip.MustParsePrefix("fd00:10:244::/56")},
		IPv6Subnet:   netip.MustParsePrefix("fd00:10:244:1::1/64"),
		MTU:          1450,
		IPMasq:       true,
	}
}

// The exact text of SPEC.md.
const golden = `FLANNEL_NETWORK=10.244.0.0/16
FLANNEL_SUBNET=10.244.1.1/24
FLANNEL_IPV6_NETWORK=fd00:10:244::/56
FLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64
FLANNEL_MTU=1450
FLANNEL_IPMASQ=true
`

func TestMarshalGolden(t *testing.T) {
	if got := string(dualStack().Marshal()); got != golden {
		t.Errorf("Marshal =\n%s\nwant\n%s", got, golden)
	}
	v4 := dualStack()
	v4.IPv6Networks, v4.IPv6Subnet, v4.IPMasq = nil, netip.Prefix{}, false
	want := "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
	if got := string(v4.Marshal()); got != want {
		t.Errorf("IPv4-only Marshal =\n%s\nwant\n%s", got, want)
	}
}

func TestWriteReadRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run", "flannel", "subnet.env") // directories created
	for _, e := range []Env{dualStack(), {Networks: dualStack().Networks, Subnet: dualStack().Subnet, MTU: 1500}} {
		if err := Write(path, e); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o644 {
			t.Fatalf("stat = %v, %v; want mode 0644", fi, err)
		}
		got, err := Read(path)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, e) {
			t.Errorf("Read = %+v, want %+v", got, e)
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only subnet.env (no temporary files)", len(entries))
	}
}

// Write replaces the file by rename: a reader holding the old file keeps its
// complete content and never sees a half-written one.
func TestWriteIsAtomic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "subnet.env")
	if err := Write(path, dualStack()); err != nil {
		t.Fatal(err)
	}
	old, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	next := dualStack()
	next.MTU = 1400
	if err := Write(path, next); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, _ := old.Read(buf)
	if string(buf[:n]) != golden {
		t.Errorf("old descriptor reads %q, want the complete old file", buf[:n])
	}
}

func TestWriteFailsCleanly(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(filepath.Join(blocker, "subnet.env"), dualStack()); err == nil {
		t.Error("Write under a regular file succeeded")
	}
}

func TestParse(t *testing.T) {
	e, err := Parse([]byte("# comment\n\nFLANNEL_NETWORK=10.244.0.0/16,10.245.0.0/16\nFLANNEL_SUBNET=10.245.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\nOTHER=1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Networks) != 2 || e.Networks[1] != netip.MustParsePrefix("10.245.0.0/16") || e.Subnet.String() != "10.245.3.1/24" {
		t.Errorf("Parse = %+v", e)
	}
	v6, err := Parse([]byte("FLANNEL_IPV6_NETWORK=fd00::/56\nFLANNEL_IPV6_SUBNET=fd00:0:0:1::1/64\nFLANNEL_MTU=1280\nFLANNEL_IPMASQ=true\n"))
	if err != nil || v6.Subnet.IsValid() || v6.IPv6Subnet.String() != "fd00:0:0:1::1/64" {
		t.Errorf("IPv6-only Parse = %+v, %v", v6, err)
	}
}

func TestParseErrors(t *testing.T) {
	full := strings.Split(strings.TrimSpace(golden), "\n")
	without := func(key string) string {
		var out []string
		for _, l := range full {
			if !strings.HasPrefix(l, key+"=") {
				out = append(out, l)
			}
		}
		return strings.Join(out, "\n")
	}
	for _, key := range []string{KeySubnet, KeyIPv6Network, KeyIPv6Subnet, KeyMTU, KeyIPMasq} {
		_, err := Parse([]byte(without(key)))
		if !errors.Is(err, ErrMissingKey) || !strings.Contains(err.Error(), key) {
			t.Errorf("Parse without %s = %v, want a missing-key error naming it", key, err)
		}
	}
	if _, err := Parse([]byte("FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")); !errors.Is(err, ErrMissingKey) || !strings.Contains(err.Error(), KeyNetwork) {
		t.Errorf("Parse with no family = %v, want FLANNEL_NETWORK missing", err)
	}
	for in, want := range map[string]string{
		"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=abc\nFLANNEL_IPMASQ=true": `FLANNEL_MTU: "abc" is not an MTU`,
		"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=yes": `FLANNEL_IPMASQ: "yes" is not true or false`,
		"FLANNEL_NETWORK=10.244.0.0\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true":   `FLANNEL_NETWORK: "10.244.0.0" is not a CIDR`,
		"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.9.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true":  "FLANNEL_SUBNET: 10.9.1.1/24 is not inside FLANNEL_NETWORK",
		"FLANNEL_NETWORK=fd00::/56\nFLANNEL_SUBNET=fd00::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true":       "FLANNEL_NETWORK: fd00::/56 is not an IPv4 CIDR",
		"FLANNEL_NETWORK=10.244.0.0/16\ngarbage":                                                            `line 2: "garbage" is not KEY=VALUE`,
		// A file truncated mid-write by a non-atomic writer.
		"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.24": `FLANNEL_SUBNET: "10.24" is not a CIDR`,
	} {
		if _, err := Parse([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want %q", in, err, want)
		}
	}
	if _, err := Read(filepath.Join(t.TempDir(), "absent")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Read(absent) = %v, want os.ErrNotExist", err)
	}
}

// FuzzParse: Parse never panics, and whatever it accepts survives a
// Marshal/Parse round trip unchanged.
func FuzzParse(f *testing.F) {
	f.Add([]byte(golden))
	f.Add([]byte("FLANNEL_NETWORK=10.244.0.0/16,10.1.0.0/16\nFLANNEL_SUBNET=10.1.0.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"))
	f.Add([]byte("FLANNEL_IPV6_NETWORK=fd00::/56\nFLANNEL_IPV6_SUBNET=fd00::1/64\nFLANNEL_MTU=1280\nFLANNEL_IPMASQ=1\n"))
	f.Add([]byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET="))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Parse(data)
		if err != nil {
			return
		}
		again, err := Parse(e.Marshal())
		if err != nil {
			t.Fatalf("re-parse of %q: %v", e.Marshal(), err)
		}
		if !reflect.DeepEqual(again, e) {
			t.Fatalf("round trip changed %+v to %+v", e, again)
		}
	})
}
