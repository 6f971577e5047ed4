package config

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Typed readers for one JSON value of net-conf.json. Each returns an error
// that describes the value (never echoing a secret) without the field name;
// the caller prefixes the name.

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

func jsonKind(raw json.RawMessage) string {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 {
		return "nothing"
	}
	switch t[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

func readString(raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("must be a string, not %s", jsonKind(raw))
	}
	return s, nil
}

func readBool(raw json.RawMessage) (bool, error) {
	var b bool
	if err := json.Unmarshal(raw, &b); err != nil {
		return false, fmt.Errorf("must be true or false, not %s", jsonKind(raw))
	}
	return b, nil
}

// readInt reads an integral JSON number in [lo, hi].
func readInt(raw json.RawMessage, lo, hi int64) (int, error) {
	t := bytes.TrimSpace(raw)
	if jsonKind(t) != "a number" {
		return 0, fmt.Errorf("must be a number, not %s", jsonKind(raw))
	}
	n, err := strconv.ParseInt(string(t), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s is not a whole number", clip(string(t)))
	}
	if n < lo {
		return 0, fmt.Errorf("%d is below %d", n, lo)
	}
	if n > hi {
		return 0, fmt.Errorf("%d is above %d", n, hi)
	}
	return int(n), nil
}

func readPrefix(raw json.RawMessage, v6 bool) (netip.Prefix, error) {
	s, err := readString(raw)
	if err != nil {
		return netip.Prefix{}, err
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR such as %s", clip(s), exampleCIDR(v6))
	}
	if p.Addr().Zone() != "" || p.Addr().Is4In6() || p.Addr().Is6() != v6 {
		return netip.Prefix{}, fmt.Errorf("%s is not an %s CIDR", p, familyName(v6))
	}
	return p, nil
}

func readAddr(raw json.RawMessage, v6 bool) (netip.Addr, error) {
	s, err := readString(raw)
	if err != nil {
		return netip.Addr{}, err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an %s address", clip(s), familyName(v6))
	}
	if a.Zone() != "" || a.Is4In6() || a.Is6() != v6 {
		return netip.Addr{}, fmt.Errorf("%s is not an %s address", a, familyName(v6))
	}
	return a, nil
}

// readKey reads a base64 WireGuard key (32 bytes). The value is a secret and
// never appears in the error.
func readKey(raw json.RawMessage) (string, error) {
	s, err := readString(raw)
	if err != nil {
		return "", err
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != 32 {
		return "", fmt.Errorf("is not a base64-encoded 32-byte key (generate one with `wg genpsk`)")
	}
	return s, nil
}

func readEnum(raw json.RawMessage, allowed ...string) (string, error) {
	s, err := readString(raw)
	if err != nil {
		return "", err
	}
	for _, a := range allowed {
		if strings.EqualFold(s, a) {
			return a, nil
		}
	}
	return "", fmt.Errorf("%q is not one of %s", clip(s), strings.Join(allowed, ", "))
}

func familyName(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

func exampleCIDR(v6 bool) string {
	if v6 {
		return "fd00:10:244::/56"
	}
	return "10.244.0.0/16"
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
