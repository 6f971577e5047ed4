package kube

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-net/weft/internal/store"

	"github.com/weft-net/weft/internal/testenv"
)

const (
	netConfV6   = `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`
	netConfDual = `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`
)

// What the node-public-ip annotations give, value by value: an address of
// the family (an IPv4-mapped one counts as IPv4, as net.ParseIP has it), or
// an error naming the annotation and the value for anything a node cannot
// send from (not an address, a CIDR, another family, a zone, unspecified,
// loopback, multicast, broadcast, spaces); an annotation of a family the
// network does not enable is ignored whatever it holds; empty is unset; the
// other flannel annotations do not count.
func TestNodePublicAddrs(t *testing.T) {
	const ip4, ip6 = "node-public-ip", "node-public-ipv6"
	for _, tc := range []struct {
		name    string
		netconf string
		ann     map[string]string
		v4, v6  string
		ignored []string // without the prefix
		err     []string // each in the error
	}{
		{name: "none", netconf: netConfDual},
		{name: "empty", netconf: netConfDual, ann: map[string]string{ip4: "", ip6: ""}},
		{name: "IPv4", netconf: netConfV4, ann: map[string]string{ip4: "10.9.0.5"}, v4: "10.9.0.5"},
		{name: "IPv4-mapped", netconf: netConfV4, ann: map[string]string{ip4: "::ffff:10.9.0.5"}, v4: "10.9.0.5"},
		{name: "IPv6", netconf: netConfV6, ann: map[string]string{ip6: "fd00:9::5"}, v6: "fd00:9::5"},
		{name: "dual", netconf: netConfDual, ann: map[string]string{ip4: "10.9.0.5", ip6: "2001:db8::5"}, v4: "10.9.0.5",
			v6: "2001:db8::5"},
		{name: "dual, IPv4 only", netconf: netConfDual, ann: map[string]string{ip4: "10.9.0.5"}, v4: "10.9.0.5"},
		{name: "link-local IPv4", netconf: netConfV4, ann: map[string]string{ip4: "169.254.3.4"}, v4: "169.254.3.4"},
		{name: "other annotations do not count", netconf: netConfDual, ann: map[string]string{"public-ip": "10.9.0.5",
			"public-ip-overwrite": "203.0.113.9", "public-ipv6": "fd00:9::5", "public-ipv6-overwrite": "2001:db8::9"}},
		{name: "IPv6 of an IPv4 network ignored", netconf: netConfV4, ann: map[string]string{ip4: "10.9.0.5", ip6: "fd00:9::5"},
			v4: "10.9.0.5", ignored: []string{ip6}},
		{name: "malformed IPv6 of an IPv4 network ignored", netconf: netConfV4, ann: map[string]string{ip6: "garbage"},
			ignored: []string{ip6}},
		{name: "IPv4 of an IPv6 network ignored", netconf: netConfV6, ann: map[string]string{ip4: "not-an-ip"},
			ignored: []string{ip4}},
		{name: "garbage", netconf: netConfV4, ann: map[string]string{ip4: "garbage"},
			err: []string{`annotation flannel.alpha.coreos.com/node-public-ip "garbage" is not an IP address`}},
		{name: "octet out of range", netconf: netConfV4, ann: map[string]string{ip4: "10.9.0.500"},
			err: []string{`node-public-ip "10.9.0.500" is not an IP address`}},
		{name: "CIDR", netconf: netConfV4, ann: map[string]string{ip4: "10.9.0.0/16"},
			err: []string{`node-public-ip "10.9.0.0/16" is not an IP address`}},
		{name: "spaces", netconf: netConfV4, ann: map[string]string{ip4: " 10.9.0.5"},
			err: []string{`node-public-ip " 10.9.0.5" is not an IP address`}},
		{name: "zone", netconf: netConfV6, ann: map[string]string{ip6: "fe80::1%eth0"},
			err: []string{`node-public-ipv6 "fe80::1%eth0" is not an IP address`}},
		{name: "IPv6 in the IPv4 one", netconf: netConfV4, ann: map[string]string{ip4: "fd00:9::5"},
			err: []string{`node-public-ip "fd00:9::5" is not an IPv4 address`}},
		{name: "IPv4 in the IPv6 one", netconf: netConfV6, ann: map[string]string{ip6: "10.9.0.5"},
			err: []string{`node-public-ipv6 "10.9.0.5" is not an IPv6 address`}},
		{name: "IPv4-mapped in the IPv6 one", netconf: netConfV6, ann: map[string]string{ip6: "::ffff:10.9.0.5"},
			err: []string{`node-public-ipv6 "::ffff:10.9.0.5" is not an IPv6 address`}},
		{name: "unspecified IPv4", netconf: netConfV4, ann: map[string]string{ip4: "0.0.0.0"},
			err: []string{`node-public-ip "0.0.0.0" is not a unicast address this node can use`}},
		{name: "unspecified IPv6", netconf: netConfV6, ann: map[string]string{ip6: "::"},
			err: []string{`node-public-ipv6 "::" is not a unicast address`}},
		{name: "loopback", netconf: netConfV4, ann: map[string]string{ip4: "127.0.0.1"},
			err: []string{`node-public-ip "127.0.0.1" is not a unicast address`}},
		{name: "loopback IPv6", netconf: netConfV6, ann: map[string]string{ip6: "::1"},
			err: []string{`node-public-ipv6 "::1" is not a unicast address`}},
		{name: "multicast", netconf: netConfV4, ann: map[string]string{ip4: "224.0.0.1"},
			err: []string{`node-public-ip "224.0.0.1" is not a unicast address`}},
		{name: "multicast IPv6", netconf: netConfV6, ann: map[string]string{ip6: "ff02::1"},
			err: []string{`node-public-ipv6 "ff02::1" is not a unicast address`}},
		{name: "broadcast", netconf: netConfV4, ann: map[string]string{ip4: "255.255.255.255"},
			err: []string{`node-public-ip "255.255.255.255" is not a unicast address`}},
		{name: "long value clipped", netconf: netConfV4, ann: map[string]string{ip4: strings.Repeat("x", 100)},
			err: []string{`"` + strings.Repeat("x", 64) + `..." is not an IP address`}},
		{name: "both malformed, both named", netconf: netConfDual, ann: map[string]string{ip4: "nope4", ip6: "nope6"},
			err: []string{`node-public-ip "nope4" is not an IP address; `, `node-public-ipv6 "nope6" is not an IP address`}},
		{name: "one malformed: the other not returned", netconf: netConfDual, ann: map[string]string{ip4: "10.9.0.5", ip6: "nope6"},
			err: []string{`node-public-ipv6 "nope6"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newKeys(DefaultPrefix)
			got, ignored, err := k.nodePublicAddrs(prefixed(tc.ann), mustNetConf(t, tc.netconf))
			if len(tc.err) > 0 {
				if err == nil {
					t.Fatalf("no error; got %v", got)
				}
				for _, e := range tc.err {
					if !strings.Contains(err.Error(), e) {
						t.Errorf("error %q lacks %q", err, e)
					}
				}
				if got != [2]netip.Addr{} {
					t.Errorf("addresses %v returned with the error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := [2]netip.Addr{addrOrZero(tc.v4), addrOrZero(tc.v6)}
			if got != want {
				t.Errorf("got %v, want %v", got, want)
			}
			var wantIgnored []string
			for _, key := range tc.ignored {
				wantIgnored = append(wantIgnored, DefaultPrefix+"/"+key)
			}
			if !slices.Equal(ignored, wantIgnored) {
				t.Errorf("ignored %q, want %q", ignored, wantIgnored)
			}
		})
	}
}

func addrOrZero(s string) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	return netip.MustParseAddr(s)
}

// The annotations are named after the prefix as flannel names them
// (--kube-annotation-prefix with a slash: "-" before the name).
func TestNodePublicAddrsPrefix(t *testing.T) {
	k := newKeys("example.com/net")
	if k.nodePublicIP != "example.com/net-node-public-ip" || k.nodePublicIPv6 != "example.com/net-node-public-ipv6" {
		t.Fatalf("keys %q %q", k.nodePublicIP, k.nodePublicIPv6)
	}
	got, _, err := k.nodePublicAddrs(map[string]string{"example.com/net-node-public-ip": "10.9.0.5",
		DefaultPrefix + "/node-public-ip": "10.9.0.6"}, mustNetConf(t, netConfV4))
	if err != nil || got[0] != netip.MustParseAddr("10.9.0.5") {
		t.Fatalf("got %v, %v", got, err)
	}
}

// The store reads the own Node (NODE_NAME, or POD_NAME's node) at each
// call: the value it holds now, an error wrapping store.ErrNotYet while the
// Node is not registered, the ignored family logged once, and a malformed
// value an error naming the node and the annotation.
func TestPublicAddrs(t *testing.T) {
	var logs testenv.LogBuffer
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "kube-flannel-ds-x", Namespace: "kube-flannel"},
		Spec: corev1.PodSpec{NodeName: "n1"}}
	api := newFake(pod)
	nc := mustNetConf(t, netConfV4)
	s := newTestStore(t, api, nc, logs.Logger(), func(o *Options) {
		o.NodeName, o.PodName, o.PodNamespace = "", "kube-flannel-ds-x", "kube-flannel"
	})
	ctx := tctx(t)
	if _, _, err := s.PublicAddrs(ctx, nc); !errors.Is(err, store.ErrNotYet) || !strings.Contains(err.Error(), "node n1 is not registered yet") {
		t.Fatalf("unregistered node: %v", err)
	}
	api.put(t, kubeNode("n1", nil, nil)) // registered, no podCIDR yet: the addresses do not wait for one
	if v4, v6, err := s.PublicAddrs(ctx, nc); err != nil || v4.IsValid() || v6.IsValid() {
		t.Fatalf("no annotations: %v %v %v", v4, v6, err)
	}
	n := api.node(t, "n1")
	n.Annotations = prefixed(map[string]string{"node-public-ip": "10.9.0.5", "node-public-ipv6": "fd00:9::5"})
	api.put(t, n)
	for range 2 {
		if v4, v6, err := s.PublicAddrs(ctx, nc); err != nil || v4 != netip.MustParseAddr("10.9.0.5") || v6.IsValid() {
			t.Fatalf("annotated: %v %v %v", v4, v6, err)
		}
	}
	if got := logs.Count("ignoring an annotation of an address family the network does not enable", "node-public-ipv6"); got != 1 {
		t.Errorf("the IPv6 annotation on an IPv4 network logged %d times, want once:\n%s", got, logs.String())
	}
	if got := logs.Count("the Node gives this node's public address", "node-public-ip", "address=10.9.0.5"); got != 2 {
		t.Errorf("the address given logged %d times, want once a call:\n%s", got, logs.String())
	}
	n = api.node(t, "n1")
	n.Annotations[DefaultPrefix+"/node-public-ip"] = "10.9.0.500"
	api.put(t, n)
	_, _, err := s.PublicAddrs(ctx, nc)
	if err == nil || errors.Is(err, store.ErrNotYet) ||
		err.Error() != `node n1: annotation flannel.alpha.coreos.com/node-public-ip "10.9.0.500" is not an IP address` {
		t.Fatalf("malformed: %v", err)
	}
	if _, _, err := s.PublicAddrs(ctx, nil); err == nil {
		t.Error("no configuration: no error")
	}
}
