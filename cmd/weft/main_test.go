//go:build linux

package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &out, &out); err != nil || !strings.HasPrefix(out.String(), "weft 0.") {
		t.Errorf("weft version = %q, %v", out.String(), err)
	}
	if err := run(context.Background(), nil, &out, &out); err == nil {
		t.Error("weft with no command succeeded")
	}
	if err := run(context.Background(), []string{"frob"}, &out, &out); err == nil || !strings.Contains(err.Error(), `unknown command "frob"`) {
		t.Errorf("weft frob = %v", err)
	}
}
