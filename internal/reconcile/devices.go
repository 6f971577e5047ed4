package reconcile

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/weft-net/weft/internal/kernel"
)

// devState is one desired device and what the reconciler last saw of it.
type devState struct {
	want  kernel.Device
	index int // 0 until a pass found it
}

// SetDevices replaces the desired devices (a backend's, after its Ensure,
// which may have made them anew: the next pass takes each at the index it
// finds). Every one is checked by the next Apply. Devices left out are no
// longer looked after; nothing is deleted.
func (r *Reconciler) SetDevices(ds []kernel.Device) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.devices = make(map[string]*devState, len(ds))
	for _, d := range ds {
		r.devices[d.Name] = &devState{want: d}
		r.devDirty[d.Name] = true
	}
}

// Device returns the index at which the last pass found a desired device.
func (r *Reconciler) Device(name string) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d, ok := r.devices[name]
	if !ok || d.index == 0 {
		return 0, false
	}
	return d.index, true
}

// MarkDevice records that a kernel notice concerns a device (by name, or by
// index when name is ""): the next Apply checks it. It reports whether the
// device is one of the desired ones.
func (r *Reconciler) MarkDevice(name string, index int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.devices[name]; ok {
		r.devDirty[name] = true
		return true
	}
	if index <= 0 {
		return false
	}
	for n, d := range r.devices {
		if d.index == index {
			r.devDirty[n] = true
			return true
		}
	}
	return false
}

// devicesLocked checks the dirty devices (all of them when all is set) and
// makes each one's MTU, MAC, addresses and up flag what is desired. It
// returns the devices that are missing or were replaced under another
// index, which their backend must make again (the reconciler cannot: a TUN
// belongs to the process that opened it), and the failed writes.
func (r *Reconciler) devicesLocked(all bool, st *Stats) []error {
	var errs []error
	names := make([]string, 0, len(r.devDirty))
	for n := range r.devDirty {
		names = append(names, n)
	}
	if all {
		names = names[:0]
		for n := range r.devices {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	clear(r.devDirty)
	for _, name := range names {
		d, ok := r.devices[name]
		if !ok {
			continue
		}
		link, err := r.k.LinkByName(name)
		switch {
		case errors.Is(err, kernel.ErrLinkNotFound):
			st.Missing = append(st.Missing, name)
			r.devDirty[name] = true // until its backend has made it again
			continue
		case err != nil:
			errs = append(errs, fmt.Errorf("device %s: %w", name, err))
			r.devDirty[name] = true
			continue
		case d.index != 0 && link.Index != d.index:
			// Deleted and made again by someone else: the objects that
			// name the old index are gone with it.
			st.Missing = append(st.Missing, name)
			d.index = link.Index
			continue
		}
		d.index = link.Index
		n, flushed, err := r.configure(link, d.want)
		st.DeviceWrites += n
		if flushed {
			// The kernel flushed the routes through the device when it
			// went down or lost its last address, without a notice for
			// each: write its objects again.
			r.forgetLinkLocked(link.Index)
		}
		if err != nil {
			st.Failed++
			errs = append(errs, fmt.Errorf("device %s: %w", name, err))
			r.devDirty[name] = true
		}
	}
	return errs
}

// configure writes what differs between a link and its desired state. It
// returns how many writes it made, and whether the device was down or
// lacked an address (the kernel then flushed the routes through it).
func (r *Reconciler) configure(l kernel.Link, want kernel.Device) (n int, flushed bool, err error) {
	flushed = !l.Up
	if !want.MAC.IsZero() && l.MAC != want.MAC {
		if err := r.k.SetLinkMAC(l.Index, want.MAC); err != nil {
			return n, flushed, err
		}
		n++
	}
	if want.MTU > 0 && l.MTU != want.MTU {
		if err := r.k.SetLinkMTU(l.Index, want.MTU); err != nil {
			return n, flushed, err
		}
		n++
	}
	have, err := r.k.Addrs(l.Index)
	if err != nil {
		return n, flushed, fmt.Errorf("list addresses: %w", err)
	}
	// Add before removing: the device is never without its address.
	for _, a := range want.Addrs {
		if !slices.Contains(have, a) {
			if err := r.k.AddAddr(l.Index, a); err != nil {
				return n, flushed, err
			}
			n++
			flushed = true
		}
	}
	for _, a := range have {
		if !slices.Contains(want.Addrs, a) && !linkLocal(a) {
			if err := r.k.DeleteAddr(l.Index, a); err != nil {
				return n, flushed, err
			}
			n++
		}
	}
	if !l.Up {
		if err := r.k.SetLinkUp(l.Index); err != nil {
			return n, flushed, err
		}
		n++
	}
	return n, flushed, nil
}

// linkLocal reports whether a is an address the kernel gives a device
// itself (IPv6 fe80::/10), which is not weft's to remove.
func linkLocal(a netip.Prefix) bool { return a.Addr().IsLinkLocalUnicast() }

// DiffDevices is Diff for the devices: what a pass would change, changing
// nothing. A missing device is left out: its backend, not a pass, makes it.
func (r *Reconciler) DiffDevices() ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := make([]string, 0, len(r.devices))
	for n := range r.devices {
		names = append(names, n)
	}
	slices.Sort(names)
	var out []string
	for _, name := range names {
		want := r.devices[name].want
		l, err := r.k.LinkByName(name)
		if errors.Is(err, kernel.ErrLinkNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if !want.MAC.IsZero() && l.MAC != want.MAC {
			out = append(out, fmt.Sprintf("device %s has MAC %s, want %s", name, l.MAC, want.MAC))
		}
		if want.MTU > 0 && l.MTU != want.MTU {
			out = append(out, fmt.Sprintf("device %s has MTU %d, want %d", name, l.MTU, want.MTU))
		}
		have, err := r.k.Addrs(l.Index)
		if err != nil {
			return nil, err
		}
		for _, a := range want.Addrs {
			if !slices.Contains(have, a) {
				out = append(out, fmt.Sprintf("device %s lacks address %s", name, a))
			}
		}
		for _, a := range have {
			if !slices.Contains(want.Addrs, a) && !linkLocal(a) {
				out = append(out, fmt.Sprintf("device %s has a stray address %s", name, a))
			}
		}
		if !l.Up {
			out = append(out, fmt.Sprintf("device %s is down", name))
		}
	}
	return out, nil
}
