//go:build linux

package wireguard

import (
	"crypto/rand"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
)

// BenchmarkCryptoCeiling is the bound WireGuard's cipher sets on a
// userspace data path on this CPU: sealing and opening one 1,420-byte
// packet (the pods' MTU over a 1,500-byte underlay), as every packet is
// sealed by one node and opened by the other. SetBytes makes the reported
// MB/s the pod-to-pod payload one core could carry if it did nothing else.
func BenchmarkCryptoCeiling(b *testing.B) {
	key := make([]byte, chacha20poly1305.KeySize)
	_, _ = rand.Read(key)
	aead, err := chacha20poly1305.New(key)
	if err != nil {
		b.Fatal(err)
	}
	pkt := make([]byte, 1420)
	nonce := make([]byte, chacha20poly1305.NonceSize)
	buf := make([]byte, 0, len(pkt)+aead.Overhead())
	out := make([]byte, 0, len(pkt))
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		sealed := aead.Seal(buf[:0], nonce, pkt, nil)
		if _, err := aead.Open(out[:0], nonce, sealed, nil); err != nil {
			b.Fatal(err)
		}
	}
}
