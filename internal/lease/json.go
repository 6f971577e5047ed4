package lease

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
)

// ErrValue is wrapped by errors about a lease value that is not flannel's JSON.
var ErrValue = errors.New("invalid lease value")

// wireAttrs is flannel's LeaseAttrs as it appears in the store: field names,
// order and omitempty rules are flannel's (PublicIP always written, "0.0.0.0"
// when unset; PublicIPv6 always written, null when unset; the rest omitted
// when empty). Decoding matches field names case-insensitively, as flannel's
// encoding/json does.
type wireAttrs struct {
	PublicIP      *string
	PublicIPv6    *string
	BackendType   string          `json:",omitempty"`
	BackendData   json.RawMessage `json:",omitempty"`
	BackendV6Data json.RawMessage `json:",omitempty"`
}

// MarshalJSON encodes a in flannel's format, e.g.
// {"PublicIP":"192.168.10.4","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1}}.
func (a Attrs) MarshalJSON() ([]byte, error) {
	w := wireAttrs{BackendType: a.BackendType}
	v4 := "0.0.0.0"
	if a.PublicIP.IsValid() {
		if !a.PublicIP.Is4() {
			return nil, fmt.Errorf("%w: PublicIP %s is not IPv4", ErrValue, a.PublicIP)
		}
		v4 = a.PublicIP.String()
	}
	w.PublicIP = &v4
	if a.PublicIPv6.IsValid() {
		if !a.PublicIPv6.Is6() || a.PublicIPv6.Is4In6() {
			return nil, fmt.Errorf("%w: PublicIPv6 %s is not IPv6", ErrValue, a.PublicIPv6)
		}
		v6 := a.PublicIPv6.String()
		w.PublicIPv6 = &v6
	}
	var err error
	if w.BackendData, err = canonical(a.BackendData, "BackendData"); err != nil {
		return nil, err
	}
	if w.BackendV6Data, err = canonical(a.BackendV6Data, "BackendV6Data"); err != nil {
		return nil, err
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes flannel's format. A missing or "0.0.0.0" PublicIP
// and a missing or null PublicIPv6 give the zero Addr; null backend data is
// treated as absent.
func (a *Attrs) UnmarshalJSON(data []byte) error {
	var w wireAttrs
	if err := json.Unmarshal(data, &w); err != nil {
		return fmt.Errorf("%w: %w", ErrValue, err)
	}
	var out Attrs
	var err error
	if out.PublicIP, err = readAddr(w.PublicIP, false); err != nil {
		return err
	}
	if out.PublicIPv6, err = readAddr(w.PublicIPv6, true); err != nil {
		return err
	}
	out.BackendType = w.BackendType
	if out.BackendData, err = canonical(w.BackendData, "BackendData"); err != nil {
		return err
	}
	if out.BackendV6Data, err = canonical(w.BackendV6Data, "BackendV6Data"); err != nil {
		return err
	}
	*a = out
	return nil
}

// ParseAttrs decodes a lease value; it is UnmarshalJSON as a function.
func ParseAttrs(data []byte) (Attrs, error) {
	var a Attrs
	err := a.UnmarshalJSON(data)
	return a, err
}

func readAddr(s *string, v6 bool) (netip.Addr, error) {
	name := "PublicIP"
	if v6 {
		name = "PublicIPv6"
	}
	if s == nil || *s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(*s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%w: %s %q is not an IP address", ErrValue, name, *s)
	}
	if a.Is4In6() && !v6 {
		a = a.Unmap()
	}
	if a.Is4() == v6 {
		return netip.Addr{}, fmt.Errorf("%w: %s %q is of the wrong address family", ErrValue, name, *s)
	}
	if a.IsUnspecified() {
		return netip.Addr{}, nil
	}
	return a, nil
}

// canonical returns raw in the form json.Marshal writes it (compact, with
// <, > and & escaped, as flannel's encoder writes them), or nil for absent or
// null data, so that decoding and encoding again gives the same bytes.
func canonical(raw json.RawMessage, name string) (json.RawMessage, error) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return nil, nil
	}
	out, err := json.Marshal(json.RawMessage(t))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrValue, name, err)
	}
	return out, nil
}
