package lease

import (
	"encoding/json"
	"testing"
)

// FuzzParseAttrs checks that any value ParseAttrs accepts re-encodes and
// decodes to the same attributes, and that encoding is stable.
func FuzzParseAttrs(f *testing.F) {
	f.Add([]byte(golden))
	f.Add([]byte(`{"PublicIP":"10.1.1.1","PublicIPv6":"fd00::1","BackendV6Data":{"a":[1,2]}}`))
	f.Add([]byte(`{"publicip":"::ffff:10.1.1.1"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ParseAttrs(data)
		if err != nil {
			return
		}
		enc, err := json.Marshal(a)
		if err != nil {
			t.Fatalf("marshal %+v: %v", a, err)
		}
		b, err := ParseAttrs(enc)
		if err != nil {
			t.Fatalf("reparse %s: %v", enc, err)
		}
		if !a.Equal(b) {
			t.Fatalf("round trip changed %+v to %+v", a, b)
		}
		enc2, _ := json.Marshal(b)
		if string(enc) != string(enc2) {
			t.Fatalf("unstable encoding %s vs %s", enc, enc2)
		}
	})
}

// FuzzParseKey checks that any key ParseKey accepts is canonical: FormatKey
// gives it back unchanged.
func FuzzParseKey(f *testing.F) {
	for _, k := range []string{"10.5.34.0-24", "10.5.34.0-24&fd00:5:34::-64", "0.0.0.0-0&fd00::-64", "1.2.3.4-32"} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		v4, v6, err := ParseKey(key)
		if err != nil {
			return
		}
		if got := FormatKey(v4, v6); got != key {
			t.Fatalf("ParseKey(%q) then FormatKey = %q", key, got)
		}
	})
}
