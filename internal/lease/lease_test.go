package lease

import (
	"encoding/json"
	"errors"
	"hash/maphash"
	"net/netip"
	"testing"
	"time"
)

// golden is the value SPEC.md gives for a vxlan lease.
const golden = `{"PublicIP":"192.168.10.4","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"22:56:a3:21:8b:8d"}}`

func TestMarshalGolden(t *testing.T) {
	cases := []struct {
		name string
		in   Attrs
		want string
	}{
		{"spec vxlan", Attrs{PublicIP: netip.MustParseAddr("192.168.10.4"), BackendType: "vxlan",
			BackendData: json.RawMessage(`{"VNI": 1, "VtepMAC": "22:56:a3:21:8b:8d"}`)}, golden},
		{"dual-stack", Attrs{PublicIP: netip.MustParseAddr("10.0.0.1"), PublicIPv6: netip.MustParseAddr("fd00::1"),
			BackendType: "vxlan", BackendData: json.RawMessage(`{"VNI":1}`), BackendV6Data: json.RawMessage(`{"VNI":1}`)},
			`{"PublicIP":"10.0.0.1","PublicIPv6":"fd00::1","BackendType":"vxlan","BackendData":{"VNI":1},"BackendV6Data":{"VNI":1}}`},
		{"host-gw no data", Attrs{PublicIP: netip.MustParseAddr("10.0.0.2"), BackendType: "host-gw"},
			`{"PublicIP":"10.0.0.2","PublicIPv6":null,"BackendType":"host-gw"}`},
		{"ipv6 only", Attrs{PublicIPv6: netip.MustParseAddr("fd00::2"), BackendType: "host-gw", BackendData: json.RawMessage("null")},
			`{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::2","BackendType":"host-gw"}`},
		{"empty", Attrs{}, `{"PublicIP":"0.0.0.0","PublicIPv6":null}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := json.Marshal(c.in)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != c.want {
				t.Fatalf("got  %s\nwant %s", got, c.want)
			}
			back, err := ParseAttrs(got)
			if err != nil {
				t.Fatal(err)
			}
			again, _ := json.Marshal(back)
			if string(again) != c.want {
				t.Fatalf("round trip: %s", again)
			}
		})
	}
}

func TestParseFlannelValues(t *testing.T) {
	cases := []struct {
		in   string
		want Attrs
	}{
		{golden, Attrs{PublicIP: netip.MustParseAddr("192.168.10.4"), BackendType: "vxlan",
			BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"22:56:a3:21:8b:8d"}`)}},
		// flannel's encoding/json matches keys case-insensitively and ignores unknown ones.
		{`{"publicip":"10.1.1.1","backendtype":"udp","Extra":5}`, Attrs{PublicIP: netip.MustParseAddr("10.1.1.1"), BackendType: "udp"}},
		{`{"PublicIP":"10.1.1.1","PublicIPv6":"fd00::1","BackendType":"wireguard","BackendData":{"PublicKey":"abc=","Port":51820},"BackendV6Data":null}`,
			Attrs{PublicIP: netip.MustParseAddr("10.1.1.1"), PublicIPv6: netip.MustParseAddr("fd00::1"), BackendType: "wireguard",
				BackendData: json.RawMessage(`{"PublicKey":"abc=","Port":51820}`)}},
		{`{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::9"}`, Attrs{PublicIPv6: netip.MustParseAddr("fd00::9")}},
	}
	for _, c := range cases {
		got, err := ParseAttrs([]byte(c.in))
		if err != nil {
			t.Fatalf("%s: %v", c.in, err)
		}
		if !got.Equal(c.want) {
			t.Errorf("%s: got %+v want %+v", c.in, got, c.want)
		}
	}
}

func TestParseBadValues(t *testing.T) {
	for _, in := range []string{``, `not json`, `[]`, `{"PublicIP":5}`, `{"PublicIP":"fd00::1"}`, `{"PublicIPv6":"10.0.0.1"}`,
		`{"PublicIP":"10.0.0.300"}`, `{"PublicIP":"10.0.0.1"} x`, `{"BackendData":{]}`} {
		if _, err := ParseAttrs([]byte(in)); !errors.Is(err, ErrValue) {
			t.Errorf("%q: err %v, want ErrValue", in, err)
		}
	}
}

func TestKeys(t *testing.T) {
	cases := []struct {
		key    string
		v4, v6 string
	}{
		{"10.5.34.0-24", "10.5.34.0/24", ""},
		{"10.5.34.0-24&fd00:5:34::-64", "10.5.34.0/24", "fd00:5:34::/64"},
		{"0.0.0.0-0&fd00:5:34::-64", "", "fd00:5:34::/64"},
		{"10.244.0.0-16", "10.244.0.0/16", ""},
	}
	for _, c := range cases {
		v4, v6, err := ParseKey(c.key)
		if err != nil {
			t.Fatalf("%s: %v", c.key, err)
		}
		if got := pstr(v4); got != c.v4 {
			t.Errorf("%s: v4 %s want %s", c.key, got, c.v4)
		}
		if got := pstr(v6); got != c.v6 {
			t.Errorf("%s: v6 %s want %s", c.key, got, c.v6)
		}
		if got := FormatKey(v4, v6); got != c.key {
			t.Errorf("format: %s want %s", got, c.key)
		}
	}
}

func TestBadKeys(t *testing.T) {
	for _, k := range []string{"", "config", "10.5.34.0", "10.5.34.0-", "10.5.34.0-33", "10.5.34.1-24", "10.5.34.0-024",
		"10.5.34.0-24&", "10.5.34.0-24&10.1.0.0-16", "fd00::-64", "0.0.0.0-0", "10.5.34.0-24&FD00::-64", "10.5.34.0-+24",
		"10.5.34.0-24&fd00:5:34::1-64", "010.5.34.0-24"} {
		if _, _, err := ParseKey(k); !errors.Is(err, ErrKey) {
			t.Errorf("%q: err %v, want ErrKey", k, err)
		}
	}
}

func TestLeaseKeyAndEqual(t *testing.T) {
	l := Lease{Subnet: netip.MustParsePrefix("10.5.34.0/24"), IPv6Subnet: netip.MustParsePrefix("fd00:5:34::/64")}
	if l.Key() != "10.5.34.0-24&fd00:5:34::-64" {
		t.Fatal(l.Key())
	}
	m := l
	m.Attrs.BackendData = json.RawMessage(`{}`)
	if l.Equal(m) || !l.Equal(l) {
		t.Fatal("Equal")
	}
}

func pstr(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

// Hash digests exactly what Equal compares: equal leases hash alike (Node
// is not part of either), and a change in any compared field changes it.
func TestHash(t *testing.T) {
	seed := maphash.MakeSeed()
	base := Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24"), IPv6Subnet: netip.MustParsePrefix("fd00:1::/64"),
		Attrs: Attrs{PublicIP: netip.MustParseAddr("192.168.1.1"), PublicIPv6: netip.MustParseAddr("fd99::1"),
			BackendType: "vxlan", BackendData: json.RawMessage(`{"VNI":1}`), BackendV6Data: json.RawMessage(`{"VNI":2}`)},
		Expiration: time.Unix(1800000000, 5), Node: "a"}
	same := base
	same.Node = "b"
	same.Attrs.BackendData = append(json.RawMessage(nil), base.Attrs.BackendData...)
	same.Expiration = base.Expiration.In(time.FixedZone("x", 3600))
	if !same.Equal(base) || same.Hash(seed) != base.Hash(seed) {
		t.Fatalf("equal leases hash differently")
	}
	variants := map[string]func(*Lease){
		"subnet":       func(l *Lease) { l.Subnet = netip.MustParsePrefix("10.244.2.0/24") },
		"no v6 subnet": func(l *Lease) { l.IPv6Subnet = netip.Prefix{} },
		"public ip":    func(l *Lease) { l.Attrs.PublicIP = netip.MustParseAddr("192.168.1.2") },
		"public ipv6":  func(l *Lease) { l.Attrs.PublicIPv6 = netip.Addr{} },
		"type":         func(l *Lease) { l.Attrs.BackendType = "host-gw" },
		"data":         func(l *Lease) { l.Attrs.BackendData = json.RawMessage(`{"VNI":3}`) },
		"data moved": func(l *Lease) {
			l.Attrs.BackendData, l.Attrs.BackendV6Data = nil, json.RawMessage(`{"VNI":1}{"VNI":2}`)
		},
		"type and data": func(l *Lease) { l.Attrs.BackendType, l.Attrs.BackendData = `vxlan{"VNI":1}`, nil },
		"v6 data":       func(l *Lease) { l.Attrs.BackendV6Data = nil },
		"expiration":    func(l *Lease) { l.Expiration = l.Expiration.Add(time.Nanosecond) },
		"no expiration": func(l *Lease) { l.Expiration = time.Time{} },
		"reservation":   func(l *Lease) { l.Reservation = true },
	}
	for name, change := range variants {
		l := base
		change(&l)
		if l.Equal(base) {
			t.Fatalf("%s: the variant is Equal", name)
		}
		if l.Hash(seed) == base.Hash(seed) {
			t.Errorf("%s: same hash", name)
		}
	}
}
