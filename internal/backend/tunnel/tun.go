//go:build linux

package tunnel

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// TUN offload flags (linux/if_tun.h).
const (
	tunFCsum = 0x01
	tunFTSO4 = 0x02
	tunFTSO6 = 0x04
	tunFUSO4 = 0x20
	tunFUSO6 = 0x40
)

// tunOptions are how the device's queues are opened.
type tunOptions struct {
	queues  int
	offload bool // IFF_VNET_HDR with TSO (and USO where the kernel has it)
}

// tunDevice is the open queues of a persistent TUN device.
type tunDevice struct {
	name   string
	queues []*os.File
	uso    bool
	close  sync.Once
}

// errIncompatible is TUNSETIFF refusing an existing device of that name
// (not a TUN, or opened with other queue flags).
var errIncompatible = errors.New("existing device is incompatible")

// openTUN opens (creating or attaching to) the TUN device name with the given
// number of queues and marks it persistent, so the kernel keeps the device
// and its routes when the process dies.
func openTUN(name string, o tunOptions) (_ *tunDevice, retErr error) {
	d := &tunDevice{name: name}
	defer func() {
		if retErr != nil {
			d.Close()
		}
	}()
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_MULTI_QUEUE)
	if o.offload {
		flags |= unix.IFF_VNET_HDR
	}
	for i := range max(o.queues, 1) {
		f, err := openQueue(name, flags)
		if err != nil {
			return nil, err
		}
		d.queues = append(d.queues, f)
		if i > 0 {
			continue
		}
		if err := ioctl(f, unix.TUNSETPERSIST, 1); err != nil {
			return nil, fmt.Errorf("make %s persistent: %w", name, err)
		}
		if o.offload {
			if err := d.setOffload(f); err != nil {
				return nil, err
			}
		}
	}
	return d, nil
}

func (d *tunDevice) setOffload(f *os.File) error {
	base := tunFCsum | tunFTSO4 | tunFTSO6
	if err := ioctl(f, unix.TUNSETOFFLOAD, base|tunFUSO4|tunFUSO6); err == nil {
		d.uso = true
		return nil
	}
	if err := ioctl(f, unix.TUNSETOFFLOAD, base); err != nil {
		return fmt.Errorf("set offloads on %s: %w", d.name, err)
	}
	return nil
}

func openQueue(name string, flags uint16) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun name %q: %w", name, err)
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("attach to %s: %w (%w)", name, errIncompatible, err)
		}
		return nil, fmt.Errorf("attach to %s: %w", name, err)
	}
	// A non-blocking descriptor is served by Go's poller: reads park the
	// goroutine, and Close wakes them.
	return os.NewFile(uintptr(fd), "/dev/net/tun:"+name), nil
}

func ioctl(f *os.File, req uint, arg int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) { ierr = unix.IoctlSetInt(int(fd), req, arg) }); err != nil {
		return err
	}
	return ierr
}

// Close detaches every queue; the persistent device stays.
func (d *tunDevice) Close() {
	d.close.Do(func() {
		for _, f := range d.queues {
			_ = f.Close()
		}
	})
}

// OpenPersistentTUN opens (creating or attaching to) the TUN device name
// with one queue and the vnet header with TSO and USO offloads, marked
// persistent, for a data path of another package (wireguard-go): the
// device, its addresses and its routes outlive the process.
func OpenPersistentTUN(name string) (*os.File, error) {
	d, err := openTUN(name, tunOptions{queues: 1, offload: true})
	if err != nil {
		return nil, err
	}
	return d.queues[0], nil
}
