// Package cni is weft's CNI plugin: the "type": "flannel" (or "weft") entry of
// a conflist. It reads the node's subnet.env, builds a configuration for a
// delegate plugin (bridge with host-local IPAM by default, as flannel does),
// saves that configuration under dataDir/<containerID> and runs the delegate.
//
// Design notes:
//   - The saved file holds exactly the delegate configuration bytes that were
//     given to the delegate's ADD, as flannel's plugin saves them, so weft can
//     DEL pods that flannel added and flannel can DEL pods that weft added.
//   - DEL, CHECK and GC never rebuild the delegate configuration from
//     subnet.env: they use the saved one, so a subnet that changed since ADD
//     still releases the address that was handed out.
//   - Every side effect goes through two small boundaries: Runner (executing
//     delegate plugins) and savedconf.Store (the saved files). Tests replace
//     the runner with a fake and point the store at a temporary directory.
//   - Errors carry a CNI error code (errors.go); the skel adapter in Funcs is
//     the only place that turns them into *types.Error.
package cni

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/weft-net/weft/internal/subnetfile"
)

// DefaultDataDir is where the delegate configurations are saved (flannel's).
const DefaultDataDir = "/var/lib/cni/flannel"

// NetConf is the plugin's own network configuration, read from stdin.
type NetConf struct {
	CNIVersion string `json:"cniVersion,omitempty"`
	Name       string `json:"name"`
	Type       string `json:"type"`

	// SubnetFile is the subnet.env written by weftd (or flanneld).
	SubnetFile string `json:"subnetFile,omitempty"`
	// DataDir holds one saved delegate configuration per container.
	DataDir string `json:"dataDir,omitempty"`
	// Delegate is the base of the delegate's configuration.
	Delegate *Delegate `json:"delegate,omitempty"`
	// IPAM is the base of the delegate's ipam section.
	IPAM *IPAM `json:"ipam,omitempty"`
	// RuntimeConfig is passed to the delegate unchanged.
	RuntimeConfig json.RawMessage `json:"runtimeConfig,omitempty"`
	// PrevResult is set by the runtime for CHECK and DEL (CNI >= 0.4.0).
	PrevResult json.RawMessage `json:"prevResult,omitempty"`
	// ValidAttachments is set by the runtime for GC (CNI >= 1.1.0).
	ValidAttachments []types.GCAttachment `json:"cni.dev/valid-attachments,omitempty"`
}

// ParseNetConf decodes the plugin's stdin, fills in defaults and validates the
// delegate section, as ADD and STATUS need. Errors carry ErrDecodingFailure
// (malformed JSON) or ErrInvalidNetworkConfig (well-formed but unusable).
func ParseNetConf(data []byte) (*NetConf, error) {
	n, err := decodeNetConf(data)
	if err != nil {
		return nil, err
	}
	if n.Delegate != nil {
		if err := n.Delegate.validateInput(); err != nil {
			return nil, withCode(types.ErrInvalidNetworkConfig, err)
		}
	}
	return n, nil
}

// decodeNetConf is ParseNetConf without the checks of the delegate section
// that only matter for building a new delegate configuration: DEL, CHECK and
// GC use the saved one, and must not fail on a conflist edited since ADD.
func decodeNetConf(data []byte) (*NetConf, error) {
	n := &NetConf{}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(n); err != nil {
		code := types.ErrDecodingFailure
		if _, ok := errors.AsType[*configError](err); ok {
			code = types.ErrInvalidNetworkConfig
		}
		return nil, withCode(code, fmt.Errorf("decode network configuration from stdin: %w", err))
	}
	if dec.More() {
		return nil, withCode(types.ErrDecodingFailure, errors.New("decode network configuration from stdin: trailing data after the JSON object"))
	}
	if n.SubnetFile == "" {
		n.SubnetFile = subnetfile.DefaultPath
	}
	if n.DataDir == "" {
		n.DataDir = DefaultDataDir
	}
	if n.Name == "" {
		return nil, withCode(types.ErrInvalidNetworkConfig, errors.New("network configuration has no \"name\""))
	}
	return n, nil
}
