// Package interop holds the interoperability suite of outbound TLS
// enforcement against real third-party software from Debian: Knot DNS
// serves a DNSSEC-signed zone tree (DANE-EE, DANE-TA, a TLSA mismatch, a
// child zone whose DS matches no key, a child zone signed offline with
// ldns-signzone whose TLSA signature is corrupted), Unbound validates it as
// posthorn's [dns] resolver, nginx serves MTA-STS policies, and Postfix
// receives the mail. Everything of one run listens on a loopback address
// of its own (127.x.y.z, not 127.0.0.1) on free ports and is stopped by
// PID; a test skips when a binary is missing. The package has no code of
// its own, only tests.
package interop
