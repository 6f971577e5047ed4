//go:build linux

package tunnel

import "unsafe"

// cmsgAt returns a pointer to b's first byte for reading a cmsghdr in place;
// b must be at least a cmsghdr long.
func cmsgAt(b []byte) unsafe.Pointer { return unsafe.Pointer(&b[0]) }
