// Package pgp is the Posthorn OpenPGP plugin (binary posthorn-pgp, see
// cmd/posthorn-pgp and README.md), the method "pgp" of the host's
// encryption policy chain:
//
//   - outbound (sdk.OutboundHook): PGP/MIME (RFC 3156) — signs with the
//     organisation's key and encrypts to the recipient's key and to our
//     own, optionally with protected headers; already encrypted mail is
//     passed on unchanged;
//   - key discovery in a configurable order, cached with a TTL: the local
//     store, WKD (draft-koch-openpgp-webkey-service, advanced then direct
//     method), a keyserver (VKS or HKP), keys harvested from inbound mail
//     (Autocrypt headers, marked unverified);
//   - inbound (sdk.InboundHook): decrypts PGP/MIME and inline PGP for the
//     organisation's users, verifies signatures, adds a result header and
//     harvests keys;
//   - publishing: a WKD server for the organisation's keys and a lookup
//     page;
//   - the command line posthorn-pgp keys generate|import|list|show|remove|export.
//
// Keys are OpenPGP v4 (RFC 4880) and v6 (RFC 9580), handled with
// github.com/ProtonMail/go-crypto; the store is keystore (SQLite in the
// plugin's data directory, ready for PostgreSQL).
package pgp
