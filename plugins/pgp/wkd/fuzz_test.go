package wkd

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzHandler sends arbitrary paths and hosts to the WKD server and
// arbitrary addresses to URLs: no panics, only 200 for real keys.
func FuzzHandler(f *testing.F) {
	keys := src{"example.org/" + Hash("alice"): {[]byte("K")}}
	h := Handler(keys, nil)
	f.Add("/.well-known/openpgpkey/example.org/hu/"+Hash("alice"), "openpgpkey.example.org", "alice@example.org")
	f.Add("/.well-known/openpgpkey/hu/"+Hash("alice"), "example.org:443", "Joe.Doe@Example.ORG")
	f.Add("/.well-known/openpgpkey/../policy", "[::1]:8443", "@")
	f.Fuzz(func(t *testing.T, path, host, addr string) {
		URLs(addr)
		req := httptest.NewRequest(http.MethodGet, "https://example.org/", nil)
		req.URL.Path, req.Host = path, host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code == 200 && rec.Body.String() != "K" && rec.Header().Get("Content-Type") == "application/octet-stream" {
			t.Fatalf("%s %s served %q", host, path, rec.Body.String())
		}
	})
}
