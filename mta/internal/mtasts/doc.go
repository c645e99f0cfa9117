// Package mtasts is the sending side of MTA-STS, SMTP MTA Strict
// Transport Security (RFC 8461): policy discovery through the
// _mta-sts.DOMAIN TXT record (section 3.1), the policy file fetched from
// https://mta-sts.DOMAIN/.well-known/mta-sts.txt (sections 3.2 and 3.3),
// MX host matching (section 4.1), and a policy cache that survives
// restarts and is refreshed before policies expire (sections 5.1 and
// 10.2).
//
// The fetch validates the certificate of mta-sts.DOMAIN (PKIX, the name,
// dates), never follows redirects, wants status 200 and media type
// text/plain, and caps size (64 KiB) and time (60 s). A cached policy
// that has not expired is never replaced by a fetch that fails or
// returns something invalid (section 5.1, "Policy Application Control
// Flow"), and stays in use when the TXT record disappears or its lookup
// fails, until max_age runs out.
//
// Parsing is strict about syntax and values, and follows the RFC where
// it is lenient on purpose: unknown keys (in the TXT record and the
// policy) are ignored and, of a repeated key other than mx, only the
// first instance counts (section 3.2). Choices beyond the RFC: empty
// lines in the policy are tolerated; an mx pattern with a trailing dot
// is accepted (and stored without it); the mx field may be absent only
// in mode none; max_age above 31557600 makes the policy invalid (not
// clamped).
//
// What the caller does with a policy (RFC 8461 section 5): in mode
// enforce, deliver only to MX hosts for which Policy.Matches is true,
// with TLS and a certificate PKIX-valid for the MX host name (Postfix's
// "verify" with match = hostname); if no MX host qualifies, defer. In
// mode testing, deliver as usual but report failures (TLS-RPT). Mode
// none means no policy. Failed fetches carry a TLS-RPT result type
// (FetchError.ResultType).
package mtasts
