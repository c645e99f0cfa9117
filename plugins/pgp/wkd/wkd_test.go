package wkd

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"

	"github.com/posthorn/posthorn/testbed/ca"
)

func TestHash(t *testing.T) {
	// The example of draft-koch-openpgp-webkey-service.
	if h := Hash("Joe.Doe"); h != "iy9q119eutrkn8s1mk4r39qejnbu3n5q" {
		t.Errorf("Hash(Joe.Doe) = %s", h)
	}
	adv, dir, err := URLs("Joe.Doe@Example.ORG")
	if err != nil {
		t.Fatal(err)
	}
	if adv != "https://openpgpkey.example.org/.well-known/openpgpkey/example.org/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe.Doe" ||
		dir != "https://example.org/.well-known/openpgpkey/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe.Doe" {
		t.Errorf("URLs: %s %s", adv, dir)
	}
	for _, bad := range []string{"", "nobody", "@x.test", "a@", "a@x/y"} {
		if _, _, err := URLs(bad); err == nil {
			t.Errorf("URLs(%q): no error", bad)
		}
	}
	tool, err := exec.LookPath("gpg-wks-client")
	if err != nil {
		tool = "/usr/lib/gnupg/gpg-wks-client"
	}
	out, err := exec.Command(tool, "--print-wkd-hash", "alice@example.org", "Bob.Builder+x@partner.test").Output()
	if err != nil {
		t.Logf("gpg-wks-client not usable (%v): hash checked against the draft's example only", err)
		return
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		local, _, _ := Split(f[1])
		if Hash(local) != f[0] {
			t.Errorf("gpg-wks-client says %s for %s, we say %s", f[0], f[1], Hash(local))
		}
	}
}

type src map[string][][]byte // domain/hash → keys

func (s src) WKDKeys(_ context.Context, domain, hash string) ([][]byte, error) {
	return s[domain+"/"+hash], nil
}
func (s src) WKDDomains(context.Context) ([]string, error) {
	return []string{"example.org", "other.test"}, nil
}

// client returns a WKD client whose connections for names in ok go to
// addr (any port) and fail for the rest, trusting c.
func client(c *ca.CA, addr string, ok ...string) *Client {
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: c.Pool()},
		DialContext: func(ctx context.Context, network, hostport string) (net.Conn, error) {
			host, _, _ := net.SplitHostPort(hostport)
			for _, h := range ok {
				if h == host {
					return (&net.Dialer{}).DialContext(ctx, network, addr)
				}
			}
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		},
	}
	return &Client{HTTP: &http.Client{Transport: tr}}
}

func TestClientServerHTTPS(t *testing.T) {
	c, err := ca.New("wkd test CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := c.Issue("openpgpkey.example.org", "example.org", "other.test")
	if err != nil {
		t.Fatal(err)
	}
	keys := src{
		"example.org/" + Hash("alice"): {[]byte("ALICEKEY")},
		"other.test/" + Hash("carol"):  {[]byte("CAROL1"), []byte("CAROL2")},
	}
	srv := httptest.NewUnstartedServer(Handler(keys, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("lookup page"))
	})))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	ctx := context.Background()

	// Advanced method.
	cl := client(c, addr, "openpgpkey.example.org", "example.org")
	b, method, err := cl.Lookup(ctx, "Alice@Example.org")
	if err != nil || string(b) != "ALICEKEY" || method != "advanced" {
		t.Fatalf("advanced: %q %s %v", b, method, err)
	}
	// No openpgpkey subdomain: the direct method.
	cl = client(c, addr, "other.test")
	b, method, err = cl.Lookup(ctx, "carol@other.test")
	if err != nil || string(b) != "CAROL1CAROL2" || method != "direct" {
		t.Fatalf("direct: %q %s %v", b, method, err)
	}
	if _, _, err := cl.Lookup(ctx, "nobody@other.test"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown address: %v", err)
	}
	// A domain we do not serve, and a server we cannot reach.
	if _, _, err := client(c, addr, "openpgpkey.example.org", "example.org").Lookup(ctx, "x@example.org"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown local part: %v", err)
	}
	if _, _, err := client(c, addr).Lookup(ctx, "alice@example.org"); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("unreachable: %v", err)
	}
	// An untrusted certificate is an error.
	other, _ := ca.New("other CA")
	if _, _, err := client(other, addr, "example.org").Lookup(ctx, "alice@example.org"); err == nil {
		t.Error("untrusted certificate accepted")
	}
	// Size limit.
	small := client(c, addr, "other.test")
	small.MaxSize = 4
	if _, _, err := small.Lookup(ctx, "carol@other.test"); err == nil || !strings.Contains(err.Error(), "larger") {
		t.Errorf("size limit: %v", err)
	}

	// Policy files, bad hashes, other paths.
	hc := client(c, addr, "openpgpkey.example.org", "example.org", "other.test").HTTP
	for path, want := range map[string]int{
		"https://openpgpkey.example.org/.well-known/openpgpkey/example.org/policy": 200,
		"https://example.org/.well-known/openpgpkey/policy":                        200,
		"https://other.test/.well-known/openpgpkey/hu/notahash":                    404,
		"https://example.org/.well-known/openpgpkey/unknown.test/policy":           404,
		"https://example.org/": 200,
	} {
		resp, err := hc.Get(path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}
