// Command weft-cni is weft's CNI plugin, installed as bin/cni/flannel and bin/cni/weft.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "weft CNI plugin: being built in this session")
	os.Exit(1)
}
