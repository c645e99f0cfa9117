// Package wkd is the OpenPGP Web Key Directory (draft-koch-openpgp-webkey-
// service): a client that looks up keys by mail address with the advanced
// method (https://openpgpkey.DOMAIN/.well-known/openpgpkey/DOMAIN/hu/HASH)
// and then the direct method (https://DOMAIN/.well-known/openpgpkey/hu/HASH),
// HASH being the z-base-32 encoded SHA-1 of the lower-cased local part and
// the l= parameter carrying the local part as written; and a server
// (http.Handler) that publishes keys on both paths with a policy file.
package wkd

import (
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

const zbase32Alphabet = "ybndrfg8ejkmcpqxot1uwisza345h769"

// ZBase32 encodes b in z-base-32 (RFC 6189 §5.1.6 alphabet), as WKD uses.
func ZBase32(b []byte) string {
	var sb strings.Builder
	var acc uint32
	bits := 0
	for _, c := range b {
		acc = acc<<8 | uint32(c)
		bits += 8
		for bits >= 5 {
			bits -= 5
			sb.WriteByte(zbase32Alphabet[(acc>>uint(bits))&31])
		}
	}
	if bits > 0 {
		sb.WriteByte(zbase32Alphabet[(acc<<uint(5-bits))&31])
	}
	return sb.String()
}

// Hash is the WKD hash of a local part: z-base-32 of SHA-1 of the
// lower-cased (ASCII) local part.
func Hash(local string) string {
	h := sha1.Sum([]byte(strings.ToLower(local)))
	return ZBase32(h[:])
}

// Split splits addr into local part and lower-cased domain.
func Split(addr string) (local, domain string, err error) {
	addr = strings.Trim(strings.TrimSpace(addr), "<>")
	i := strings.LastIndexByte(addr, '@')
	if i <= 0 || i == len(addr)-1 {
		return "", "", fmt.Errorf("%q is not a mail address", addr)
	}
	local, domain = addr[:i], strings.ToLower(addr[i+1:])
	if strings.ContainsAny(domain, "/?#\\ ") || strings.Contains(domain, "..") {
		return "", "", fmt.Errorf("%q: bad domain", addr)
	}
	return local, domain, nil
}

// URLs returns the advanced and direct lookup URLs for addr.
func URLs(addr string) (advanced, direct string, err error) {
	local, domain, err := Split(addr)
	if err != nil {
		return "", "", err
	}
	h := Hash(local)
	q := "?l=" + url.QueryEscape(local)
	advanced = "https://openpgpkey." + domain + "/.well-known/openpgpkey/" + domain + "/hu/" + h + q
	direct = "https://" + domain + "/.well-known/openpgpkey/hu/" + h + q
	return advanced, direct, nil
}

// ErrNotFound means neither method found a key.
var ErrNotFound = errors.New("wkd: no key published")

// Client looks keys up.
type Client struct {
	// HTTP is the client used; nil means one with a 10 s timeout. Tests
	// give one whose transport dials the test server and trusts its CA.
	HTTP *http.Client
	// MaxSize bounds a response body; 0 means 256 KiB.
	MaxSize int64
}

// Lookup fetches the key block (binary, possibly several keys) for addr:
// the advanced method first, then the direct one. The caller must keep
// only keys with a user ID for addr (the draft requires it).
func (c *Client) Lookup(ctx context.Context, addr string) ([]byte, string, error) {
	adv, dir, err := URLs(addr)
	if err != nil {
		return nil, "", err
	}
	b, advErr := c.get(ctx, adv)
	if advErr == nil {
		return b, "advanced", nil
	}
	if ctx.Err() != nil {
		return nil, "", ctx.Err()
	}
	b, dirErr := c.get(ctx, dir)
	if dirErr == nil {
		return b, "direct", nil
	}
	if errors.Is(dirErr, ErrNotFound) {
		// The direct method answered: there is no key (the advanced
		// method had none or its subdomain does not exist).
		return nil, "", ErrNotFound
	}
	return nil, "", fmt.Errorf("wkd %s: advanced: %v; direct: %v", addr, advErr, dirErr)
}

func (c *Client) get(ctx context.Context, u string) ([]byte, error) {
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	max := c.MaxSize
	if max <= 0 {
		max = 256 << 10
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "posthorn-pgp")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, ErrNotFound
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%s: HTTP %d", u, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: key larger than %d bytes", u, max)
	}
	if len(b) == 0 {
		return nil, ErrNotFound
	}
	return b, nil
}

// Source gives the server the keys it publishes.
type Source interface {
	// WKDKeys returns the binary key blocks published for the local part
	// with WKD hash hash at domain (nil when there are none).
	WKDKeys(ctx context.Context, domain, hash string) ([][]byte, error)
	// WKDDomains lists the domains served.
	WKDDomains(ctx context.Context) ([]string, error)
}

// Handler serves WKD for src: /.well-known/openpgpkey/DOMAIN/hu/HASH and
// /.well-known/openpgpkey/DOMAIN/policy (advanced), and
// /.well-known/openpgpkey/hu/HASH and /.well-known/openpgpkey/policy
// (direct; the domain is the Host). Other paths go to next (may be nil).
func Handler(src Source, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		const pfx = "/.well-known/openpgpkey/"
		if !strings.HasPrefix(r.URL.Path, pfx) {
			if next != nil {
				next.ServeHTTP(w, r)
				return
			}
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Access-Control-Allow-Origin", "*")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		segs := strings.Split(strings.TrimPrefix(r.URL.Path, pfx), "/")
		var domain, kind, hash string
		switch {
		case len(segs) == 1 && segs[0] == "policy":
			domain, kind = hostDomain(r.Host), "policy"
		case len(segs) == 2 && segs[0] == "hu":
			domain, kind, hash = hostDomain(r.Host), "hu", segs[1]
		case len(segs) == 2 && segs[1] == "policy":
			domain, kind = strings.ToLower(segs[0]), "policy"
		case len(segs) == 3 && segs[1] == "hu":
			domain, kind, hash = strings.ToLower(segs[0]), "hu", segs[2]
		default:
			http.NotFound(w, r)
			return
		}
		domains, err := src.WKDDomains(r.Context())
		if err != nil {
			http.Error(w, "key store unavailable", http.StatusServiceUnavailable)
			return
		}
		served := false
		for _, d := range domains {
			if strings.EqualFold(d, domain) {
				served = true
			}
		}
		if !served {
			http.NotFound(w, r)
			return
		}
		if kind == "policy" {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			io.WriteString(w, "# OpenPGP Web Key Directory policy (posthorn-pgp)\n")
			return
		}
		if len(hash) != 32 || strings.Trim(hash, zbase32Alphabet) != "" {
			http.NotFound(w, r)
			return
		}
		keys, err := src.WKDKeys(r.Context(), domain, hash)
		if err != nil {
			http.Error(w, "key store unavailable", http.StatusServiceUnavailable)
			return
		}
		if len(keys) == 0 {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		for _, k := range keys {
			w.Write(k)
		}
	})
}

// hostDomain is the request's host without port, lower-cased.
func hostDomain(h string) string {
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		h = h[:i]
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}
