// Package resolver is the DNS stub resolver that Posthorn's outbound
// delivery and inbound authentication checks use. It talks to one
// recursive (ideally DNSSEC-validating) resolver with
// github.com/miekg/dns and reports, for every answer, whether it was
// authenticated.
//
// It follows:
//   - RFC 1034/1035: queries, NXDOMAIN vs NODATA, CNAME chains (records
//     whose owner name is not on the chain are ignored);
//   - RFC 6891: EDNS0 with the DO bit, so that a validating resolver
//     reports the AD bit (RFC 4035 section 3.2.3, RFC 6840 section 5.7);
//   - RFC 7766: a truncated UDP answer is retried over TCP;
//   - RFC 5321 section 5.1 and RFC 7505: MX records sorted by preference,
//     the null MX returned as a single MX with Host ".";
//   - RFC 6698/7672: TLSA lookups for DANE.
//
// An answer is "secure" only if Options.TrustAD is set and every response
// involved (each CNAME hop, A and AAAA) carried the AD bit. The AD bit is
// only meaningful when the path to the resolver is trusted (RFC 6698
// section 4.1, RFC 7672 section 1.3), which is why TrustAD is off unless
// configured (see conf: [dns] trust_ad; by default on only for a loopback
// resolver).
//
// Errors: errors.Is(err, ErrNotFound) for NXDOMAIN and NODATA (IsNXDomain
// tells them apart); errors.Is(err, ErrBogus) for SERVFAIL, which a
// validating resolver answers when DNSSEC validation fails and which must
// never be treated as "no record"; IsTemporary(err) for everything that
// may succeed later (timeouts, network errors, SERVFAIL, REFUSED,
// malformed answers). The secure flag is returned with ErrNotFound too: a
// secure NODATA is an authenticated denial of existence.
package resolver
