//go:build linux

package kubeapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/weft-net/weft/internal/lab"
)

// requestTimeout bounds one request of the control plane's own client.
const requestTimeout = 5 * time.Second

// newHTTPClient returns the admin's HTTPS client for the control plane's own
// checks (readiness, the probe Node); it dials from inside Options.NetNS when
// that is set.
func (c *ControlPlane) newHTTPClient() (*http.Client, error) {
	tlsConf, err := c.pki.clientTLS()
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{TLSClientConfig: tlsConf, MaxIdleConnsPerHost: 2, IdleConnTimeout: 30 * time.Second}
	if ns := c.o.NetNS; ns != "" {
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return lab.DialContext(ctx, ns, network, addr)
		}
	}
	return &http.Client{Transport: tr, Timeout: requestTimeout}, nil
}

// rawGet fetches path and returns the status and (the start of) the body.
func (c *ControlPlane) rawGet(ctx context.Context, path string) (int, string, error) {
	var body bytes.Buffer
	status, err := c.do(ctx, http.MethodGet, path, nil, &body)
	return status, body.String(), err
}

// doJSON sends in (when not nil) as JSON and decodes a 2xx answer into out
// (when not nil); any other status is an error carrying the answer.
func (c *ControlPlane) doJSON(ctx context.Context, method, path string, in, out any) (int, error) {
	var reqBody io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		reqBody = bytes.NewReader(b)
	}
	var body bytes.Buffer
	status, err := c.do(ctx, method, path, reqBody, &body)
	if err != nil {
		return status, err
	}
	if status/100 != 2 {
		return status, fmt.Errorf("%s %s: status %d: %s", method, path, status, strings.TrimSpace(body.String()))
	}
	if out != nil {
		if err := json.Unmarshal(body.Bytes(), out); err != nil {
			return status, fmt.Errorf("decode %s %s: %w", method, path, err)
		}
	}
	return status, nil
}

func (c *ControlPlane) do(ctx context.Context, method, path string, reqBody io.Reader, respBody *bytes.Buffer) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.url+path, reqBody)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if reqBody != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(respBody, io.LimitReader(resp.Body, 1<<20)); err != nil {
		return resp.StatusCode, fmt.Errorf("read %s %s: %w", method, path, err)
	}
	return resp.StatusCode, nil
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
