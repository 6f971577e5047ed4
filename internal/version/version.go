// Package version reports the build's version: the release number compiled in
// as a constant and, when the binary was built from a git checkout, the commit.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Release is the weft release this source tree is.
const Release = "0.1.0-dev"

// FlannelCompat is the flannel release whose flags, store and wire formats weft
// is compatible with.
const FlannelCompat = "v0.28"

// String returns "0.1.0-dev (commit abc1234, go1.26.8, compatible with flannel v0.28)".
func String() string {
	commit := "unknown commit"
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			commit = "commit " + rev
			if dirty {
				commit += "+dirty"
			}
		}
	}
	return fmt.Sprintf("%s (%s, %s, compatible with flannel %s)", Release, commit, runtime.Version(), FlannelCompat)
}
