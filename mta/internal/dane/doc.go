// Package dane is DANE for SMTP: TLSA record lookup with the DNSSEC rules
// of RFC 7672 (SMTP Security via Opportunistic DANE TLS), and a pure
// matching function for TLSA records against a presented certificate
// chain per RFC 6698 (the TLSA record) and RFC 7671 (DANE operational
// guidance).
//
// What is supported, per RFC 7672 section 3.1:
//   - usage DANE-EE(3): the leaf certificate (selector 0) or its public key
//     (selector 1) matches; no name check and no expiry check (RFC 7672
//     section 3.1.1);
//   - usage DANE-TA(2): a certificate presented in the chain (RFC 7672
//     section 3.1.2: the server MUST include the trust anchor) matches, and
//     the leaf chains up to it with ordinary PKIX validation (signatures,
//     validity dates, CA constraints) and carries one of the reference
//     names (RFC 7672 section 3.2.2: the TLSA base domain and the MX host
//     name; wildcards in the leftmost label allowed, section 3.2.3);
//   - selectors Cert(0) and SPKI(1); matching types Full(0), SHA2-256(1),
//     SHA2-512(2);
//   - digest algorithm agility (RFC 7671 section 9): for a usage and
//     selector that has SHA2-512 records, SHA2-256 records are ignored.
//
// Usages PKIX-TA(0) and PKIX-EE(1) are "unusable" for SMTP (RFC 7672
// section 3.1.3) and ignored, as are unknown usages, selectors and
// matching types and records whose data has the wrong length. A secure
// TLSA RRset whose records are all unusable still makes TLS mandatory
// (RFC 7672 section 2.2, "encrypt" in Postfix's words).
//
// Deviations and choices:
//   - A DANE-TA record must match a certificate that the server presents
//     in its chain, other than the leaf; a bare public key trust anchor not
//     in the chain (allowed by RFC 7671 section 5.2.2 for selector 1) is
//     not supported (RFC 7672 requires servers to send it anyway).
//   - Extended key usage is not checked for DANE-TA (any purpose is
//     accepted), as mail servers often carry odd EKUs.
//
// Lookup's decision table (the MX RRset's security is the caller's: the
// resolver's secure flag of the MX lookup, or of the address lookup for
// a domain without MX records):
//
//	MX RRset      MX host A/AAAA   TLSA RRset                     State          delivery
//	----------    --------------   ----------------------------   ------------   ---------------------------------------
//	bogus/fail    -                -                              (caller)       defer: never downgrade (RFC 7672 §2.2.2)
//	insecure      -                not looked up                  NoDANE         no DANE (other policies decide)
//	secure        bogus/fail       not looked up                  Indeterminate  defer
//	secure        insecure         not looked up                  NoDANE         no DANE (RFC 7672 §2.2)
//	secure        secure           bogus/SERVFAIL/timeout         Indeterminate  defer, never downgrade (§2.2.1)
//	secure        secure           insecure (records or none)     NoDANE         no DANE
//	secure        secure           secure NXDOMAIN/NODATA         NoTLSA         no DANE (authenticated denial)
//	secure        secure           secure, none usable            Unusable       TLS mandatory, not authenticated
//	secure        secure           secure, some usable            Authenticate   TLS mandatory, Verify must pass, no fallback
//
// When the MX host name is an alias with a secure CNAME chain, TLSA
// records are looked up at the expanded name first and, when there are
// none, at the original name (RFC 7672 section 2.2.2); the base domain
// used is reported, and both names are reference identifiers.
package dane
