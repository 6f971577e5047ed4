package config

import (
	"encoding/json"
	"fmt"
	"strings"
)

// DefaultBackend is the type of a net-conf.json without Backend.Type.
const DefaultBackend = "vxlan"

// Backend is the Backend section of net-conf.json. Its options belong to the
// backend type's own package, which reads them from Options with
// ReadOptions; the backend registry validates them after the store read the
// file (see BackendTypes and ConfigureBackend).
type Backend struct {
	// Type is the backend type, lower case ("vxlan" when not given).
	Type string
	// Options is the section as written minus Type and the Windows-only
	// options, as a JSON object ("" when there are none). It is text, not a
	// map, so that NetConf stays comparable and serialisable.
	Options string
}

// Option is one backend option: its canonical name and a reader that stores
// the value (the caller set the default before).
type Option struct {
	Name string
	Read func(json.RawMessage) error
}

// IntOption reads an integral number in [lo, hi] into dst.
func IntOption(name string, dst *int, lo, hi int64) Option {
	return Option{name, func(r json.RawMessage) (err error) { *dst, err = readInt(r, lo, hi); return err }}
}

// BoolOption reads true or false into dst.
func BoolOption(name string, dst *bool) Option {
	return Option{name, func(r json.RawMessage) (err error) { *dst, err = readBool(r); return err }}
}

// KeyOption reads a base64 32-byte key (a secret: never echoed in errors).
func KeyOption(name string, dst *string) Option {
	return Option{name, func(r json.RawMessage) (err error) { *dst, err = readKey(r); return err }}
}

// EnumOption reads one of allowed (matched case-insensitively) into dst.
func EnumOption(name string, dst *string, allowed ...string) Option {
	return Option{name, func(r json.RawMessage) (err error) { *dst, err = readEnum(r, allowed...); return err }}
}

// ReadOptions reads b.Options into opts, matching names
// case-insensitively. Unknown options are returned as warnings; a bad value
// is an error wrapping ErrNetConf that names the option.
func (b Backend) ReadOptions(opts []Option) ([]string, error) {
	var warnings []string
	if b.Options == "" {
		return nil, nil
	}
	known := make([]string, 0, len(opts))
	for _, o := range opts {
		known = append(known, o.Name)
	}
	fields, err := readObject([]byte(b.Options), "Backend ("+b.Type+")", known, &warnings)
	if err != nil {
		return nil, err
	}
	for _, o := range opts {
		if r, ok := fields[o.Name]; ok && !isNull(r) {
			if err := o.Read(r); err != nil {
				return nil, fmt.Errorf("%w: Backend.%s %w", ErrNetConf, o.Name, err)
			}
		}
	}
	return warnings, nil
}

// CheckMTU checks a backend's MTU option: 0 (derived from the external
// interface) or at least the minimum of the enabled families.
func (c *NetConf) CheckMTU(mtu int) error {
	if mtu == 0 {
		return nil
	}
	minMTU := 68
	if c.IPv6.Enabled {
		minMTU = 1280
	}
	if mtu < minMTU {
		return fmt.Errorf("%w: Backend.MTU %d is below the minimum %d", ErrNetConf, mtu, minMTU)
	}
	return nil
}

// BackendTypes is the registry of backend types as ConfigureBackend sees it.
type BackendTypes interface {
	// Names lists the types this build has, in the order messages show them.
	Names() []string
	// Validate reads and checks the options of c.Backend for its type,
	// returning warnings; ok is false when the build has no such type.
	Validate(c *NetConf) (warnings []string, ok bool, err error)
}

// ConfigureBackend checks c.Backend against the types this build has: an
// unknown type, or an option the type rejects, is an error wrapping
// ErrNetConf. It returns the warnings to log (unknown options).
func (c *NetConf) ConfigureBackend(types BackendTypes) ([]string, error) {
	warnings, ok, err := types.Validate(c)
	if err != nil {
		return nil, err
	}
	if ok {
		return warnings, nil
	}
	use := strings.Join(types.Names(), ", ")
	if what, ok := unsupportedBackends()[c.Backend.Type]; ok {
		return nil, fmt.Errorf("%w: Backend.Type %q (%s) is not supported by weft; use one of %s", ErrNetConf, c.Backend.Type, what, use)
	}
	return nil, fmt.Errorf("%w: Backend.Type %q is unknown; use one of %s", ErrNetConf, clip(c.Backend.Type), use)
}

// windowsOnly are options flannel accepts on Windows nodes; on Linux they are
// ignored with a warning rather than an "unknown option" one.
func windowsOnly() []string { return []string{"MacPrefix"} }

// unsupportedBackends are flannel backend types a build may lack; they get a
// specific message instead of "unknown". A type the registry has is never
// looked up here.
func unsupportedBackends() map[string]string {
	return map[string]string{
		"aws-vpc": "a cloud-provider route backend", "gce": "a cloud-provider route backend",
		"ali-vpc": "a cloud-provider route backend", "tencent-vpc": "a cloud-provider route backend",
		"alloc": "an allocation-only backend", "extension": "flannel's external-command backend",
		"ipsec": "flannel's strongSwan backend (use wireguard)",
	}
}

// parseBackend reads the section's Type and keeps its options for the
// backend's package.
func parseBackend(raw json.RawMessage, warnings *[]string) (Backend, error) {
	b := Backend{Type: DefaultBackend}
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
	if typeKey != "" {
		if !isNull(obj[typeKey]) {
			t, err := readString(obj[typeKey])
			if err != nil {
				return Backend{}, fmt.Errorf("%w: Backend.Type %w", ErrNetConf, err)
			}
			if t != "" {
				b.Type = strings.ToLower(t)
			}
		}
		delete(obj, typeKey)
	}
	for k := range obj {
		for _, w := range windowsOnly() {
			if strings.EqualFold(k, w) {
				*warnings = append(*warnings, fmt.Sprintf("net-conf.json: Backend.%s is a Windows-only option; ignored on Linux", w))
				delete(obj, k)
			}
		}
	}
	if len(obj) > 0 {
		data, err := json.Marshal(obj) // sorted keys: equal sections compare equal
		if err != nil {
			return Backend{}, fmt.Errorf("%w: Backend: %w", ErrNetConf, err)
		}
		b.Options = string(data)
	}
	return b, nil
}
