// Package smime is the Posthorn S/MIME plugin (binary posthorn-smime, see
// cmd/posthorn-smime and README.md), method "smime" in the host's
// encryption policy chain.
//
// Outbound it signs mail of the organisation's senders (multipart/signed,
// RFC 8551 §3.5.3, RFC 1847) and encrypts to recipients whose certificate
// is known, sign then encrypt: AuthEnvelopedData with AES-256-GCM
// (RFC 5083, RFC 5084) where the recipient announced it in its
// SMIMECapabilities, EnvelopedData with AES-256-CBC (RFC 5652, RFC 3565)
// otherwise; RSAES-OAEP (RFC 8017, RFC 3560) where announced,
// RSAES-PKCS1-v1_5 otherwise, for RSA certificates; ECDH key agreement
// (RFC 5753, RFC 8551 §2.7.1.2; kari.go) for EC certificates. DES and 3DES
// are never used.
//
// Inbound it harvests certificates from validly signed mail (chain to a
// configured trust store, validity, the address matching From, key
// usage), decrypts mail to the organisation's users and verifies
// signatures, adding a result header.
//
// Signing and signature parsing use go.mozilla.org/pkcs7; the envelope
// code (EnvelopedData, AuthEnvelopedData, RSA key transport, ECDH key
// agreement, BER normalising) is in cms.go, kari.go and ber.go, written
// with encoding/asn1.
package smime
