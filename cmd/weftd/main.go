// Command weftd is weft's node daemon, the flanneld replacement.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "weftd: flags land in this session")
	os.Exit(1)
}
