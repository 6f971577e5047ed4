//go:build linux

package wireguard

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weft-net/weft/internal/netlinkx"
)

// links is what both paths ask of netlink: a *netlink.Handle, or a test's
// fake.
type links interface {
	netlinkx.DeviceConfigurer
	LinkByName(name string) (netlink.Link, error)
	LinkAdd(link netlink.Link) error
}

// kernel is the data path where the kernel has WireGuard: the devices are
// kernel wireguard links, configured over generic netlink (wgctrl). They
// keep their keys and peers when weftd stops.
type kernel struct {
	k   links
	ctl control
	// closeCtl releases the wgctrl client (nil with a fake).
	closeCtl func() error
}

func (*kernel) String() string { return "kernel" }

// newKernel opens a wgctrl client.
func newKernel(k links) (*kernel, error) {
	c, err := wgctrl.New()
	if err != nil {
		return nil, fmt.Errorf("open wgctrl: %w", err)
	}
	return &kernel{k: k, ctl: c, closeCtl: c.Close}, nil
}

// ensure creates the wireguard link name when it is missing.
func (kp *kernel) ensure(name string, mtu int) error {
	l, err := kp.k.LinkByName(name)
	if err == nil {
		if l.Type() != "wireguard" {
			return fmt.Errorf("%s exists as a %s device, not a wireguard one; delete it (ip link del %s) or set WEFT_WIREGUARD_PATH=userspace", name, l.Type(), name)
		}
		return nil
	}
	var nf netlink.LinkNotFoundError
	if !errors.As(err, &nf) {
		return fmt.Errorf("look up %s: %w", name, err)
	}
	return kp.create(name, mtu)
}

func (kp *kernel) create(name string, mtu int) error {
	l := &netlink.GenericLink{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}, LinkType: "wireguard"}
	if err := kp.k.LinkAdd(l); err != nil && !errors.Is(err, unix.EEXIST) {
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
func (kp *kernel) Device(name string) (*wgtypes.Device, error) { return kp.ctl.Device(name) }

// ConfigureDevice implements control.
func (kp *kernel) ConfigureDevice(name string, cfg wgtypes.Config) error {
	return kp.ctl.ConfigureDevice(name, cfg)
}

// Close releases the wgctrl client; the devices stay.
func (kp *kernel) Close() error {
	if kp.closeCtl == nil {
		return nil
	}
	return kp.closeCtl()
}
