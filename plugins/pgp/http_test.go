package pgp_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"

	"github.com/posthorn/posthorn/testbed/ca"
)

// newHTTPClient trusts c and sends every connection to addr.
func newHTTPClient(c *ca.CA, addr string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: c.Pool()},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
}
