// Command weft is the operator's tool: today it prints its version; the lab,
// bench and status commands join it as they land.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/weft-net/weft/internal/version"
)

const usage = `usage: weft <command>

commands:
  version    print weft's version
  help       print this help
`

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "weft:", err)
		os.Exit(2)
	}
}

func run(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stdout, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "weft", version.String())
		return nil
	case "help", "--help", "-help", "-h":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return fmt.Errorf("unknown command %q (see weft help)", args[0])
}
