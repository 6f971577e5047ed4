//go:build linux

package wireguard

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// The userspace path configures its wireguard-go devices in process, in the
// text of WireGuard's cross-platform configuration protocol (UAPI, the one
// `wg` speaks over /var/run/wireguard/<dev>.sock): formatConfig writes a
// wgtypes.Config as a "set" body, parseDevice reads a "get" reply.

// formatConfig writes cfg as the body of a UAPI set operation.
func formatConfig(cfg wgtypes.Config) string {
	var b strings.Builder
	kv := func(k, v string) { b.WriteString(k + "=" + v + "\n") }
	if cfg.PrivateKey != nil {
		kv("private_key", hex.EncodeToString(cfg.PrivateKey[:]))
	}
	if cfg.ListenPort != nil {
		kv("listen_port", strconv.Itoa(*cfg.ListenPort))
	}
	if cfg.FirewallMark != nil {
		kv("fwmark", strconv.Itoa(*cfg.FirewallMark))
	}
	if cfg.ReplacePeers {
		kv("replace_peers", "true")
	}
	for _, p := range cfg.Peers {
		kv("public_key", hex.EncodeToString(p.PublicKey[:]))
		if p.Remove {
			kv("remove", "true")
			continue
		}
		if p.UpdateOnly {
			kv("update_only", "true")
		}
		if p.PresharedKey != nil {
			kv("preshared_key", hex.EncodeToString(p.PresharedKey[:]))
		}
		if p.Endpoint != nil {
			kv("endpoint", p.Endpoint.AddrPort().String())
		}
		if p.PersistentKeepaliveInterval != nil {
			kv("persistent_keepalive_interval", strconv.Itoa(int(*p.PersistentKeepaliveInterval/time.Second)))
		}
		if p.ReplaceAllowedIPs {
			kv("replace_allowed_ips", "true")
		}
		for _, n := range p.AllowedIPs {
			kv("allowed_ip", n.String())
		}
	}
	return b.String()
}

// parseDevice reads the reply of a UAPI get operation.
func parseDevice(name, text string) (*wgtypes.Device, error) {
	d := &wgtypes.Device{Name: name, Type: wgtypes.Userspace}
	var p *wgtypes.Peer
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("uapi line %q has no '='", line)
		}
		var err error
		switch k {
		case "private_key":
			err = parseHexKey(v, &d.PrivateKey)
			if err == nil {
				d.PublicKey = d.PrivateKey.PublicKey()
			}
		case "listen_port":
			d.ListenPort, err = strconv.Atoi(v)
		case "fwmark":
			d.FirewallMark, err = strconv.Atoi(v)
		case "public_key":
			d.Peers = append(d.Peers, wgtypes.Peer{})
			p = &d.Peers[len(d.Peers)-1]
			err = parseHexKey(v, &p.PublicKey)
		case "errno":
			if v != "0" {
				return nil, fmt.Errorf("uapi get: errno %s", v)
			}
		default:
			if p == nil {
				continue // a device key this reader does not use
			}
			err = parsePeerLine(p, k, v)
		}
		if err != nil {
			return nil, fmt.Errorf("uapi %s: %w", k, err)
		}
	}
	return d, sc.Err()
}

func parsePeerLine(p *wgtypes.Peer, k, v string) error {
	switch k {
	case "preshared_key":
		return parseHexKey(v, &p.PresharedKey)
	case "endpoint":
		ap, err := netip.ParseAddrPort(v)
		if err != nil {
			return err
		}
		p.Endpoint = net.UDPAddrFromAddrPort(ap)
	case "persistent_keepalive_interval":
		n, err := strconv.Atoi(v)
		if err != nil {
			return err
		}
		p.PersistentKeepaliveInterval = time.Duration(n) * time.Second
	case "allowed_ip":
		pf, err := netip.ParsePrefix(v)
		if err != nil {
			return err
		}
		p.AllowedIPs = append(p.AllowedIPs, net.IPNet{IP: pf.Addr().AsSlice(), Mask: net.CIDRMask(pf.Bits(), pf.Addr().BitLen())})
	case "last_handshake_time_sec":
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return err
		}
		if n != 0 {
			p.LastHandshakeTime = time.Unix(n, int64(p.LastHandshakeTime.Nanosecond()))
		}
	case "rx_bytes":
		n, err := strconv.ParseInt(v, 10, 64)
		p.ReceiveBytes = n
		return err
	case "tx_bytes":
		n, err := strconv.ParseInt(v, 10, 64)
		p.TransmitBytes = n
		return err
	case "protocol_version":
		n, err := strconv.Atoi(v)
		p.ProtocolVersion = n
		return err
	}
	return nil
}

func parseHexKey(v string, k *wgtypes.Key) error {
	b, err := hex.DecodeString(v)
	if err != nil || len(b) != wgtypes.KeyLen {
		return errors.New("not a hex-encoded 32-byte key")
	}
	copy(k[:], b)
	return nil
}
