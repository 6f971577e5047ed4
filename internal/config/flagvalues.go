package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// flag.Value implementations whose Set errors say what is wrong with the
// value without naming the flag (the parser adds the name) and without
// echoing values of secret flags (only stringValue holds secrets, and its Set
// cannot fail).

type stringValue struct{ p *string }

func (v stringValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}
func (v stringValue) Set(s string) error { *v.p = s; return nil }

type boolValue struct{ p *bool }

func (v boolValue) String() string {
	if v.p == nil {
		return "false"
	}
	return strconv.FormatBool(*v.p)
}
func (v boolValue) IsBoolFlag() bool { return true }
func (v boolValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("%q is not true or false", clip(s))
	}
	*v.p = b
	return nil
}

// intValue is an integer in [min, max], stored multiplied by unit into a
// time.Duration when dur is set.
type intValue struct {
	p        *int
	min, max int
}

func (v intValue) String() string {
	if v.p == nil {
		return "0"
	}
	return strconv.Itoa(*v.p)
}
func (v intValue) Set(s string) error {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("%q is not a whole number", clip(s))
	}
	if n < v.min || n > v.max {
		return fmt.Errorf("%d is outside %d..%d", n, v.min, v.max)
	}
	*v.p = n
	return nil
}

// durationValue is a whole number of unit in [min, max] (flanneld takes
// minutes and seconds as plain integers).
type durationValue struct {
	p        *time.Duration
	unit     time.Duration
	min, max int
}

func (v durationValue) String() string {
	if v.p == nil || v.unit == 0 {
		return "0"
	}
	return strconv.Itoa(int(*v.p / v.unit))
}
func (v durationValue) Set(s string) error {
	var n int
	if err := (intValue{p: &n, min: v.min, max: v.max}).Set(s); err != nil {
		return err
	}
	*v.p = time.Duration(n) * v.unit
	return nil
}

// listValue is a comma-separated list; each Set replaces the list.
type listValue struct{ p *[]string }

func (v listValue) String() string {
	if v.p == nil {
		return ""
	}
	return strings.Join(*v.p, ",")
}
func (v listValue) Set(s string) error {
	var out []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	*v.p = out
	return nil
}

// repeatValue collects every occurrence of a repeatable flag.
type repeatValue struct{ p *[]string }

func (v repeatValue) String() string {
	if v.p == nil {
		return ""
	}
	return strings.Join(*v.p, ",")
}
func (v repeatValue) Set(s string) error {
	if strings.TrimSpace(s) == "" {
		return fmt.Errorf("must not be empty")
	}
	*v.p = append(*v.p, s)
	return nil
}

// addrValue is an IP address of one family (or either when fam is 0).
type addrValue struct {
	p   *netip.Addr
	fam int // 4, 6 or 0
}

func (v addrValue) String() string {
	if v.p == nil || !v.p.IsValid() {
		return ""
	}
	return v.p.String()
}
func (v addrValue) Set(s string) error {
	if s == "" {
		*v.p = netip.Addr{}
		return nil
	}
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || a.Zone() != "" {
		return fmt.Errorf("%q is not an IP address", clip(s))
	}
	a = a.Unmap()
	switch {
	case v.fam == 4 && !a.Is4():
		return fmt.Errorf("%s is not an IPv4 address", a)
	case v.fam == 6 && !a.Is6():
		return fmt.Errorf("%s is not an IPv6 address", a)
	}
	*v.p = a
	return nil
}

// choiceValue is one of a fixed list of words.
type choiceValue struct {
	p       *string
	choices []string
}

func (v choiceValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}
func (v choiceValue) Set(s string) error {
	for _, c := range v.choices {
		if s == c {
			*v.p = s
			return nil
		}
	}
	return fmt.Errorf("%q is not one of %s", clip(s), strings.Join(v.choices, ", "))
}
