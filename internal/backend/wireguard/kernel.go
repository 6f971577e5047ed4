//go:build linux

package wireguard

import (
	"errors"
	"fmt"

	"github.com/weft-net/weft/internal/kernel"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// kernelPath is the data path where the kernel has WireGuard: the devices are
// kernel wireguard links, configured over generic netlink (wgctrl). They
// keep their keys and peers when weftd stops.
type kernelPath struct {
	k   kernel.Kernel
	ctl control
	// closeCtl releases the wgctrl client (nil with a fake).
	closeCtl func() error
}

func (*kernelPath) String() string { return "kernel" }

// newKernel opens a wgctrl client.
func newKernel(k kernel.Kernel) (*kernelPath, error) {
	c, err := wgctrl.New()
	if err != nil {
		return nil, fmt.Errorf("open wgctrl: %w", err)
	}
	return &kernelPath{k: k, ctl: c, closeCtl: c.Close}, nil
}

// ensure creates the wireguard link name when it is missing.
func (kp *kernelPath) ensure(name string, mtu int) error {
	l, err := kp.k.LinkByName(name)
	if err == nil {
		if l.Kind != kernel.KindWireGuard {
			return fmt.Errorf("%s exists as a %s device, not a wireguard one; delete it (ip link del %s) or set --wireguard-path=userspace", name, l.Kind, name)
		}
		return nil
	}
	if !errors.Is(err, kernel.ErrLinkNotFound) {
		return fmt.Errorf("look up %s: %w", name, err)
	}
	return kp.create(name, mtu)
}

func (kp *kernelPath) create(name string, mtu int) error {
	if err := kp.k.AddLink(kernel.LinkSpec{Name: name, Kind: kernel.KindWireGuard, MTU: mtu}); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("create wireguard device %s: %w", name, err)
	}
	return nil
}

// noModule reports whether creating a wireguard link failed because the
// kernel has no WireGuard.
func noModule(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.ENOENT)
}

// Device implements control.
func (kp *kernelPath) Device(name string) (*wgtypes.Device, error) { return kp.ctl.Device(name) }

// ConfigureDevice implements control.
func (kp *kernelPath) ConfigureDevice(name string, cfg wgtypes.Config) error {
	return kp.ctl.ConfigureDevice(name, cfg)
}

// Close releases the wgctrl client; the devices stay.
func (kp *kernelPath) Close() error {
	if kp.closeCtl == nil {
		return nil
	}
	return kp.closeCtl()
}
