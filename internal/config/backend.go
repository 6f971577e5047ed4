package config

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Backend types weft implements.
const (
	BackendVXLAN     = "vxlan"
	BackendHostGW    = "host-gw"
	BackendUDP       = "udp"
	BackendIPIP      = "ipip"
	BackendWireGuard = "wireguard"
)

// Backend is the Backend section of net-conf.json: the type and, for that type
// only, its options with defaults applied.
type Backend struct {
	Type      string
	VXLAN     VXLANOptions
	UDP       UDPOptions
	IPIP      IPIPOptions
	WireGuard WireGuardOptions
}

// VXLANOptions are the vxlan backend's options.
type VXLANOptions struct {
	VNI           int  // 0..16777215, default 1
	Port          int  // UDP destination port, default 8472
	GBP           bool // Group Based Policy extension
	Learning      bool // let the kernel learn FDB entries
	DirectRouting bool // plain routes to peers on a directly connected subnet
	MTU           int  // 0: external MTU - 50
}

// UDPOptions are the udp backend's options.
type UDPOptions struct {
	Port int // default 8285
}

// IPIPOptions are the ipip backend's options.
type IPIPOptions struct {
	DirectRouting bool
}

// WireGuard modes.
const (
	WireGuardSeparate = "separate"
	WireGuardAuto     = "auto"
	WireGuardIPv4     = "ipv4"
	WireGuardIPv6     = "ipv6"
)

// WireGuardOptions are the wireguard backend's options.
type WireGuardOptions struct {
	ListenPort                  int    // default 51820
	ListenPortV6                int    // default 51821
	MTU                         int    // 0: external MTU - 80
	PSK                         string // base64 pre-shared key; a secret, never logged
	PersistentKeepaliveInterval int    // seconds, 0 disables
	Mode                        string // separate (default), auto, ipv4, ipv6
}

// String describes the options without secrets.
func (w WireGuardOptions) String() string {
	psk := "unset"
	if w.PSK != "" {
		psk = "set"
	}
	return fmt.Sprintf("ListenPort=%d ListenPortV6=%d MTU=%d PSK=%s PersistentKeepaliveInterval=%d Mode=%s",
		w.ListenPort, w.ListenPortV6, w.MTU, psk, w.PersistentKeepaliveInterval, w.Mode)
}

// option reads one backend option into its field.
type option struct {
	name string
	read func(json.RawMessage) error
}

func intOpt(name string, dst *int, lo, hi int64) option {
	return option{name, func(r json.RawMessage) (err error) { *dst, err = readInt(r, lo, hi); return err }}
}

func boolOpt(name string, dst *bool) option {
	return option{name, func(r json.RawMessage) (err error) { *dst, err = readBool(r); return err }}
}

// windowsOnly are options flannel accepts on Windows nodes; on Linux they are
// ignored with a warning rather than an "unknown option" one.
func windowsOnly() []string { return []string{"MacPrefix"} }

// SupportedBackends lists the backend types weft implements.
func SupportedBackends() []string {
	return []string{BackendVXLAN, BackendHostGW, BackendUDP, BackendIPIP, BackendWireGuard}
}

// unsupportedBackends are flannel backend types weft knows of but does not
// implement; they get a specific message instead of "unknown".
func unsupportedBackends() map[string]string {
	return map[string]string{
		"aws-vpc": "a cloud-provider route backend", "gce": "a cloud-provider route backend",
		"ali-vpc": "a cloud-provider route backend", "tencent-vpc": "a cloud-provider route backend",
		"alloc": "an allocation-only backend", "extension": "flannel's external-command backend",
		"ipsec": "flannel's strongSwan backend (use wireguard)",
	}
}

func parseBackend(raw json.RawMessage, c *NetConf, warnings *[]string) (Backend, error) {
	b := Backend{Type: BackendVXLAN}
	obj := map[string]json.RawMessage{}
	if raw != nil && !isNull(raw) {
		if jsonKind(raw) != "an object" {
			return Backend{}, fmt.Errorf("%w: Backend must be an object such as {\"Type\": \"vxlan\"}, not %s", ErrNetConf, jsonKind(raw))
		}
		if err := json.Unmarshal(raw, &obj); err != nil {
			return Backend{}, fmt.Errorf("%w: Backend: %w", ErrNetConf, err)
		}
	}
	// Find Type case-insensitively first: it decides which options exist.
	typeKey := ""
	for k := range obj {
		if strings.EqualFold(k, "Type") {
			if typeKey != "" {
				return Backend{}, fmt.Errorf("%w: Backend.Type is given twice, as %q and %q", ErrNetConf, typeKey, k)
			}
			typeKey = k
		}
	}
	if typeKey != "" && !isNull(obj[typeKey]) {
		t, err := readString(obj[typeKey])
		if err != nil {
			return Backend{}, fmt.Errorf("%w: Backend.Type %w", ErrNetConf, err)
		}
		if t != "" {
			b.Type = strings.ToLower(t)
		}
	}
	opts, err := b.defaults()
	if err != nil {
		return Backend{}, err
	}
	known := []string{"Type"}
	for _, o := range opts {
		known = append(known, o.name)
	}
	for k := range obj {
		for _, w := range windowsOnly() {
			if strings.EqualFold(k, w) {
				*warnings = append(*warnings, fmt.Sprintf("net-conf.json: Backend.%s is a Windows-only option; ignored on Linux", w))
				delete(obj, k)
			}
		}
	}
	data, _ := json.Marshal(obj)
	fields, err := readObject(data, "Backend ("+b.Type+")", known, warnings)
	if err != nil {
		return Backend{}, err
	}
	for _, o := range opts {
		if r, ok := fields[o.name]; ok && !isNull(r) {
			if err := o.read(r); err != nil {
				return Backend{}, fmt.Errorf("%w: Backend.%s %w", ErrNetConf, o.name, err)
			}
		}
	}
	return b, b.check(c)
}

// defaults sets b's options to their defaults and returns the readers of the
// options b.Type accepts.
func (b *Backend) defaults() ([]option, error) {
	switch b.Type {
	case BackendVXLAN:
		v := &b.VXLAN
		*v = VXLANOptions{VNI: 1, Port: 8472}
		return []option{intOpt("VNI", &v.VNI, 0, 1<<24-1), intOpt("Port", &v.Port, 0, 65535), boolOpt("GBP", &v.GBP),
			boolOpt("Learning", &v.Learning), boolOpt("DirectRouting", &v.DirectRouting), intOpt("MTU", &v.MTU, 0, 65535)}, nil
	case BackendHostGW:
		return nil, nil
	case BackendUDP:
		b.UDP = UDPOptions{Port: 8285}
		return []option{intOpt("Port", &b.UDP.Port, 1, 65535)}, nil
	case BackendIPIP:
		return []option{boolOpt("DirectRouting", &b.IPIP.DirectRouting)}, nil
	case BackendWireGuard:
		w := &b.WireGuard
		*w = WireGuardOptions{ListenPort: 51820, ListenPortV6: 51821, Mode: WireGuardSeparate}
		return []option{intOpt("ListenPort", &w.ListenPort, 1, 65535), intOpt("ListenPortV6", &w.ListenPortV6, 1, 65535),
			intOpt("MTU", &w.MTU, 0, 65535), intOpt("PersistentKeepaliveInterval", &w.PersistentKeepaliveInterval, 0, 65535),
			{"PSK", func(r json.RawMessage) (err error) { w.PSK, err = readKey(r); return err }},
			{"Mode", func(r json.RawMessage) (err error) {
				w.Mode, err = readEnum(r, WireGuardSeparate, WireGuardAuto, WireGuardIPv4, WireGuardIPv6)
				return err
			}}}, nil
	}
	if what, ok := unsupportedBackends()[b.Type]; ok {
		return nil, fmt.Errorf("%w: Backend.Type %q (%s) is not supported by weft; use one of %s", ErrNetConf, b.Type, what, strings.Join(SupportedBackends(), ", "))
	}
	return nil, fmt.Errorf("%w: Backend.Type %q is unknown; use one of %s", ErrNetConf, clip(b.Type), strings.Join(SupportedBackends(), ", "))
}

// check applies rules that involve more than one option.
func (b *Backend) check(c *NetConf) error {
	mtus := map[string]int{BackendVXLAN: b.VXLAN.MTU, BackendWireGuard: b.WireGuard.MTU}
	if mtu := mtus[b.Type]; mtu != 0 {
		minMTU := 68
		if c.IPv6.Enabled {
			minMTU = 1280
		}
		if mtu < minMTU {
			return fmt.Errorf("%w: Backend.MTU %d is below the minimum %d", ErrNetConf, mtu, minMTU)
		}
	}
	if b.Type == BackendIPIP && c.IPv6.Enabled && !c.IPv4.Enabled {
		return fmt.Errorf("%w: Backend.Type ipip carries IPv4 only, but EnableIPv4 is false", ErrNetConf)
	}
	return nil
}
