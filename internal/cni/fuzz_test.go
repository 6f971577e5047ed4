package cni

import (
	"encoding/json"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// FuzzParseNetConf checks that stdin parsing never panics, that every error
// carries a decoding or configuration code, and that an accepted conf builds
// a delegate configuration that is valid JSON with weft's keys in place.
func FuzzParseNetConf(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}}`))
	f.Add([]byte(`{"name":"n","ipam":{"dataDir":"/d","routes":[{"dst":"10.0.0.0/8","gw":"10.0.0.1"}]},"runtimeConfig":{"a":1}}`))
	f.Add([]byte(`{"name":"n","delegate":{"name":"x"}}`))
	f.Add([]byte(`{"name":"n","delegate":{"type":"ipvlan","mtu":1400,"ipMasq":true,"isGateway":false}}`))
	f.Add([]byte(`{"name":"n","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}],"prevResult":{}}`))
	f.Add([]byte(`{"name":`))
	f.Fuzz(func(t *testing.T, data []byte) {
		conf, err := ParseNetConf(data)
		if err != nil {
			if c := ToCNIError(err).Code; c != types.ErrDecodingFailure && c != types.ErrInvalidNetworkConfig {
				t.Fatalf("error code %d for %q: %v", c, data, err)
			}
			return
		}
		raw, err := json.Marshal(BuildDelegate(conf, env46()))
		if err != nil {
			t.Fatalf("marshal delegate: %v", err)
		}
		var back struct {
			Name string `json:"name"`
			Type string `json:"type"`
			IPAM struct {
				Ranges [][]Range `json:"ranges"`
			} `json:"ipam"`
		}
		if err := json.Unmarshal(raw, &back); err != nil {
			t.Fatalf("delegate %s does not decode: %v", raw, err)
		}
		if back.Name != conf.Name || back.Type == "" || len(back.IPAM.Ranges) != 2 {
			t.Fatalf("delegate %s lost weft's keys", raw)
		}
	})
}
