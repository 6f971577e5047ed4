package storetest

import (
	"log/slog"
	"testing"

	"github.com/weft-net/weft/internal/store"
)

// fakeHarness runs the suite against Fake.
type fakeHarness struct{ f *Fake }

func (h fakeHarness) Store(t *testing.T, log *slog.Logger) store.Store { return h.f.Client(log) }
func (h fakeHarness) SetConfig(t *testing.T, netconf string)           { h.f.SetConfig(netconf) }
func (h fakeHarness) Put(t *testing.T, name, value string, reservation bool) {
	h.f.Put(name, []byte(value), reservation)
}
func (h fakeHarness) Delete(t *testing.T, name string) { h.f.Delete(name) }
func (h fakeHarness) Expire(t *testing.T, name string) { h.f.Expire(name) }
func (h fakeHarness) Get(t *testing.T, name string) (string, bool, bool) {
	v, r, ok := h.f.Get(name)
	return string(v), r, ok
}
func (h fakeHarness) Compact(t *testing.T) { h.f.Compact() }

func TestFake(t *testing.T) {
	Run(t, func(t *testing.T) Harness { return fakeHarness{NewFake(nil, nil, nil)} })
}
