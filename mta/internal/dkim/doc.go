// Package dkim signs outgoing mail with DomainKeys Identified Mail:
// RFC 6376 (DKIM), RFC 8301 (SHA-256 only, RSA keys of at least 1024
// bits) and RFC 8463 (Ed25519-SHA256), using
// github.com/emersion/go-msgauth/dkim.
//
// Keys are loaded from PEM files (LoadKey) or made with Generate; the TXT
// record publishing a key is DNSRecord at RecordName. A Signer picks the
// keys of a message's domain and prepends one DKIM-Signature per key, so a
// domain with both an RSA and an Ed25519 key is dual-signed. Signatures
// use relaxed/relaxed canonicalization over the header fields
// recommended by RFC 6376 section 5.4.1, with From oversigned.
package dkim
