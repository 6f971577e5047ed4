//go:build linux

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weft-net/weft/internal/kernel"
	"github.com/weft-net/weft/internal/lab/cluster"
)

// peer is one simulated vxlan node.
type peer struct {
	subnet   netip.Prefix
	publicIP netip.Addr
	mac      kernel.MAC
}

func (p peer) key() string {
	return fmt.Sprintf("%s/subnets/%s-%d", cluster.Prefix, p.subnet.Addr(), p.subnet.Bits())
}

func (p peer) value() string {
	v, _ := json.Marshal(map[string]any{"PublicIP": p.publicIP.String(), "PublicIPv6": nil, "BackendType": "vxlan",
		"BackendData": map[string]any{"VNI": 1, "VtepMAC": p.mac.String()}})
	return string(v)
}

// simPeers returns n peers whose /24s of 10.0.0.0/8 avoid taken (the real
// nodes' subnets) and whose public addresses are unused underlay addresses.
func simPeers(n int, taken map[netip.Prefix]bool) ([]peer, error) {
	out := make([]peer, 0, n)
	for k := 1; len(out) < n; k++ {
		if k > 0xffff {
			return nil, fmt.Errorf("10.0.0.0/8 has no room for %d peers", n)
		}
		s := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(k >> 8), byte(k), 0}), 24)
		if taken[s] {
			continue
		}
		i := len(out)
		out = append(out, peer{subnet: s, publicIP: netip.AddrFrom4([4]byte{172, 20 + byte(i>>16), byte(i >> 8), byte(i)}),
			mac: kernel.MAC{0x0a, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)}})
	}
	return out, nil
}

// etcdClient returns a client of the lab's etcd.
func (b *bench) etcdClient() (*clientv3.Client, error) { return b.c.EtcdClient() }

// takenSubnets returns the subnets of the leases in etcd.
func takenSubnets(ctx context.Context, cli *clientv3.Client) (map[netip.Prefix]bool, error) {
	resp, err := cli.Get(ctx, cluster.Prefix+"/subnets/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	out := map[netip.Prefix]bool{}
	for _, kv := range resp.Kvs {
		name := string(kv.Key)[strings.LastIndexByte(string(kv.Key), '/')+1:]
		if p, err := netip.ParsePrefix(strings.Replace(name, "-", "/", 1)); err == nil {
			out[p] = true
		}
	}
	return out, nil
}

// putPeers writes peers attached to one etcd lease, 100 per transaction, and
// returns the lease (revoking it deletes them all at once).
func putPeers(ctx context.Context, cli *clientv3.Client, peers []peer) (clientv3.LeaseID, error) {
	g, err := cli.Grant(ctx, 3600)
	if err != nil {
		return 0, fmt.Errorf("grant etcd lease: %w", err)
	}
	for start := 0; start < len(peers); start += 100 {
		var ops []clientv3.Op
		for _, p := range peers[start:min(start+100, len(peers))] {
			ops = append(ops, clientv3.OpPut(p.key(), p.value(), clientv3.WithLease(g.ID)))
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return g.ID, fmt.Errorf("write %d peer leases: %w", len(peers), err)
		}
	}
	return g.ID, nil
}

// peerWrites are the kernel objects a vxlan node programs for peers on the
// device at linkIndex, in the reconciler's order.
func peerWrites(peers []peer, linkIndex int) []kernel.Write {
	ws := make([]kernel.Write, 0, 3*len(peers))
	for _, p := range peers {
		ws = append(ws, kernel.Write{Op: kernel.OpSetFDB, FDB: kernel.FDB{MAC: p.mac, Dst: p.publicIP, LinkIndex: linkIndex}})
	}
	for _, p := range peers {
		ws = append(ws, kernel.Write{Op: kernel.OpSetNeigh, Neigh: kernel.Neigh{IP: p.subnet.Addr(), MAC: p.mac, LinkIndex: linkIndex}})
	}
	for _, p := range peers {
		ws = append(ws, kernel.Write{Op: kernel.OpReplaceRoute,
			Route: kernel.Route{Dst: p.subnet, Gw: p.subnet.Addr(), LinkIndex: linkIndex, OnLink: true}})
	}
	return ws
}
