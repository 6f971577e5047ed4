package lease

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ErrKey is wrapped by errors about a key name that is not a subnet.
var ErrKey = errors.New("invalid subnet key")

// FormatKey returns flannel's key name for a lease's subnets: "10.5.34.0-24"
// for IPv4 only, "10.5.34.0-24&fd00:5:34::-64" dual-stack, and, as flannel
// writes an IPv6-only lease, "0.0.0.0-0&fd00:5:34::-64". Prefixes are masked.
func FormatKey(v4, v6 netip.Prefix) string {
	s := "0.0.0.0-0"
	if v4.IsValid() {
		s = fmtPrefix(v4.Masked())
	}
	if v6.IsValid() {
		s += "&" + fmtPrefix(v6.Masked())
	}
	return s
}

func fmtPrefix(p netip.Prefix) string {
	return p.Addr().String() + "-" + strconv.Itoa(p.Bits())
}

// ParseKey parses a key name written by FormatKey (or by flannel). The IPv4
// part "0.0.0.0-0" stands for no IPv4 subnet. Subnets must be in canonical
// masked form: a key flannel would not write is rejected rather than
// reinterpreted.
func ParseKey(key string) (v4, v6 netip.Prefix, err error) {
	s4, s6, dual := strings.Cut(key, "&")
	if v4, err = parsePart(s4, false); err != nil {
		return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("%w: %q: %w", ErrKey, key, err)
	}
	if dual {
		if v6, err = parsePart(s6, true); err != nil {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("%w: %q: %w", ErrKey, key, err)
		}
	}
	if v4 == (netip.Prefix{}) && !v6.IsValid() {
		return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("%w: %q: no subnet", ErrKey, key)
	}
	return v4, v6, nil
}

func parsePart(s string, v6 bool) (netip.Prefix, error) {
	i := strings.LastIndexByte(s, '-')
	if i < 0 {
		return netip.Prefix{}, fmt.Errorf("%q has no -<length>", s)
	}
	a, err := netip.ParseAddr(s[:i])
	if err != nil || a.Zone() != "" || a.Is4() == v6 || a.Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q is not an %s address", s[:i], map[bool]string{false: "IPv4", true: "IPv6"}[v6])
	}
	n, err := strconv.Atoi(s[i+1:])
	if err != nil || n < 0 || n > a.BitLen() || strconv.Itoa(n) != s[i+1:] {
		return netip.Prefix{}, fmt.Errorf("%q is not a prefix length", s[i+1:])
	}
	p := netip.PrefixFrom(a, n)
	if !v6 && n == 0 && a.IsUnspecified() {
		return netip.Prefix{}, nil // flannel's "no IPv4 subnet"
	}
	if p.Masked() != p || a.String() != s[:i] {
		return netip.Prefix{}, fmt.Errorf("%q is not a canonical subnet", s)
	}
	return p, nil
}
