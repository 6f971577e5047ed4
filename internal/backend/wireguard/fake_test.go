//go:build linux

package wireguard

import (
	"fmt"
	"net"
	"slices"
	"sync"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// fakeControl is WireGuard devices in memory, applying a wgtypes.Config as
// wgctrl documents it.
type fakeControl struct {
	mu      sync.Mutex
	devs    map[string]*wgtypes.Device
	configs int // ConfigureDevice calls
	fail    error
}

func newFakeControl(names ...string) *fakeControl {
	f := &fakeControl{devs: map[string]*wgtypes.Device{}}
	for _, n := range names {
		f.devs[n] = &wgtypes.Device{Name: n}
	}
	return f
}

func (f *fakeControl) Device(name string) (*wgtypes.Device, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.devs[name]
	if !ok {
		return nil, fmt.Errorf("no device %s", name)
	}
	c := *d
	c.Peers = slices.Clone(d.Peers)
	return &c, nil
}

func (f *fakeControl) ConfigureDevice(name string, cfg wgtypes.Config) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	d, ok := f.devs[name]
	if !ok {
		return fmt.Errorf("no device %s", name)
	}
	f.configs++
	if cfg.PrivateKey != nil {
		d.PrivateKey, d.PublicKey = *cfg.PrivateKey, cfg.PrivateKey.PublicKey()
	}
	if cfg.ListenPort != nil {
		d.ListenPort = *cfg.ListenPort
	}
	if cfg.ReplacePeers {
		d.Peers = nil
	}
	for _, pc := range cfg.Peers {
		i := slices.IndexFunc(d.Peers, func(p wgtypes.Peer) bool { return p.PublicKey == pc.PublicKey })
		if pc.Remove {
			if i >= 0 {
				d.Peers = slices.Delete(d.Peers, i, i+1)
			}
			continue
		}
		if i < 0 {
			if pc.UpdateOnly {
				continue
			}
			d.Peers = append(d.Peers, wgtypes.Peer{PublicKey: pc.PublicKey})
			i = len(d.Peers) - 1
		}
		p := &d.Peers[i]
		if pc.PresharedKey != nil {
			p.PresharedKey = *pc.PresharedKey
		}
		if pc.Endpoint != nil {
			p.Endpoint = pc.Endpoint
		}
		if pc.PersistentKeepaliveInterval != nil {
			p.PersistentKeepaliveInterval = *pc.PersistentKeepaliveInterval
		}
		if pc.ReplaceAllowedIPs {
			p.AllowedIPs = nil
		}
		p.AllowedIPs = append(p.AllowedIPs, pc.AllowedIPs...)
	}
	return nil
}

// edit changes a device as a hand-typed wg command would.
func (f *fakeControl) edit(name string, fn func(d *wgtypes.Device)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f.devs[name])
}

func (f *fakeControl) peer(name string, k wgtypes.Key) (wgtypes.Peer, bool) {
	d, _ := f.Device(name)
	for _, p := range d.Peers {
		if p.PublicKey == k {
			return p, true
		}
	}
	return wgtypes.Peer{}, false
}

func ipnet(s string) net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return *n
}
