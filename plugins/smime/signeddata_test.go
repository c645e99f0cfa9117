package smime

import (
	"bytes"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"testing"
	"time"

	"go.mozilla.org/pkcs7"
)

// The structures of a SignedData as go.mozilla.org/pkcs7 marshals them
// (for the tests: parsed and marshalled again by encoding/asn1).
type testSignedData struct {
	Version          int                        `asn1:"default:1"`
	DigestAlgorithms []pkix.AlgorithmIdentifier `asn1:"set"`
	ContentInfo      contentInfo
	Certificates     asn1.RawValue          `asn1:"optional,tag:0"`
	CRLs             []pkix.CertificateList `asn1:"optional,tag:1"`
	SignerInfos      []testSignerInfo       `asn1:"set"`
}

type testSignerInfo struct {
	Version               int `asn1:"default:1"`
	IssuerAndSerialNumber struct {
		IssuerName   asn1.RawValue
		SerialNumber *big.Int
	}
	DigestAlgorithm           pkix.AlgorithmIdentifier
	AuthenticatedAttributes   []testAttribute `asn1:"optional,omitempty,tag:0"`
	DigestEncryptionAlgorithm pkix.AlgorithmIdentifier
	EncryptedDigest           []byte
}

type testAttribute struct {
	Type  asn1.ObjectIdentifier
	Value asn1.RawValue `asn1:"set"`
}

// pkcs7Sign is how SignDetached signed before issue 19.4's own builder.
func pkcs7Sign(t *testing.T, content []byte, id Identity) []byte {
	sd, err := pkcs7.NewSignedData(content)
	if err != nil {
		t.Fatal(err)
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	cfg := pkcs7.SignerInfoConfig{ExtraSignedAttributes: []pkcs7.Attribute{{Type: oidSMIMECapabilities, Value: ourCapabilities()}}}
	if err := sd.AddSignerChain(id.Cert, id.Key, id.Chain, cfg); err != nil {
		t.Fatal(err)
	}
	sd.Detach()
	der, err := sd.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// parseSigned parses a detached SignedData and checks that
// encoding/asn1 marshals the parse back to the same bytes (DER), with
// the signed attributes in DER SET OF order.
func parseSigned(t *testing.T, der []byte) testSignedData {
	t.Helper()
	var ci contentInfo
	if err := unmarshalAll(der, &ci); err != nil {
		t.Fatal(err)
	}
	var sd testSignedData
	if err := unmarshalAll(ci.Content.Bytes, &sd); err != nil {
		t.Fatal(err)
	}
	inner, err := asn1.Marshal(sd)
	if err != nil {
		t.Fatal(err)
	}
	again, err := asn1.Marshal(contentInfo{ContentType: ci.ContentType, Content: asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: inner}})
	if err != nil || !bytes.Equal(again, der) {
		t.Fatalf("not the DER encoding/asn1 makes of its parse (%v)", err)
	}
	if len(sd.SignerInfos) != 1 {
		t.Fatalf("%d signers", len(sd.SignerInfos))
	}
	var prev []byte
	for _, a := range sd.SignerInfos[0].AuthenticatedAttributes {
		enc, _ := asn1.Marshal(a)
		if prev != nil && bytes.Compare(prev, enc) > 0 {
			t.Fatal("signed attributes not in DER SET OF order")
		}
		prev = enc
	}
	return sd
}

func signingTime(t *testing.T, sd testSignedData) time.Time {
	t.Helper()
	for _, a := range sd.SignerInfos[0].AuthenticatedAttributes {
		if a.Type.Equal(oidSigningTime) {
			var tm time.Time
			if _, err := asn1.Unmarshal(a.Value.Bytes, &tm); err != nil {
				t.Fatal(err)
			}
			return tm
		}
	}
	t.Fatal("no signing time")
	return time.Time{}
}

// TestSignDetachedAsPKCS7 (issue 19.4: the SignedData is written by
// hand): for RSA signers with and without a chain the signature is byte
// for byte what go.mozilla.org/pkcs7 made at the same signing time
// (PKCS #1 v1.5 is deterministic); for ECDSA everything but the
// signature value is. Each is DER (encoding/asn1 marshals its parse to
// the same bytes), verifies over the content given in pieces, and
// names the right issuer.
func TestSignDetachedAsPKCS7(t *testing.T) {
	root := newPKI(t)
	k := rsaKey(t)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(77), Subject: pkix.Name{CommonName: "Test Intermediate"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(1000 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}, root.ca.Cert, &k.PublicKey, root.ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	ic, _ := x509.ParseCertificate(der)
	inter := &testPKI{ca: Identity{Cert: ic, Key: k}}
	chained := inter.leaf(t, "chained@org.test")
	chained.Chain = []*x509.Certificate{ic}
	ids := map[string]Identity{
		"rsa":       root.leaf(t, "alice@org.test"),
		"rsa-chain": chained,
		"ec":        root.ecLeaf(t, "ec@org.test", elliptic.P256(), x509.KeyUsageDigitalSignature),
		"ec-p384":   root.ecLeaf(t, "ec384@org.test", elliptic.P384(), x509.KeyUsageDigitalSignature),
	}
	for name, id := range ids {
		for _, n := range []int{0, 1, 63, 64, 65, 1000, 100 << 10} {
			content := make([]byte, n)
			for i := range content {
				content[i] = byte('a' + i%26)
			}
			ref := pkcs7Sign(t, content, id)
			refSD := parseSigned(t, ref)
			mine, err := signDetached(pieces{content[:n/2], content[n/2 : n/2+n/5], content[n/2+n/5:]}, id, signingTime(t, refSD))
			if err != nil {
				t.Fatal(name, n, err)
			}
			sd := parseSigned(t, mine)
			if name == "rsa" || name == "rsa-chain" {
				if !bytes.Equal(mine, ref) {
					t.Fatalf("%s %d: not pkcs7's bytes", name, n)
				}
			} else {
				sd.SignerInfos[0].EncryptedDigest, refSD.SignerInfos[0].EncryptedDigest = nil, nil
				a, _ := asn1.Marshal(sd)
				b, _ := asn1.Marshal(refSD)
				if !bytes.Equal(a, b) {
					t.Fatalf("%s %d: differs from pkcs7's beyond the signature value", name, n)
				}
			}
			wantIssuer := id.Cert.RawIssuer
			if len(id.Chain) > 0 {
				wantIssuer = id.Chain[0].RawSubject
			}
			if !bytes.Equal(sd.SignerInfos[0].IssuerAndSerialNumber.IssuerName.FullBytes, wantIssuer) {
				t.Fatalf("%s: issuer", name)
			}
			res, err := Verify(mine, content, VerifyOptions{Roots: root.roots, From: id.Cert.EmailAddresses[0]})
			if err != nil || !res.Signer.Equal(id.Cert) {
				t.Fatalf("%s %d: %v", name, n, err)
			}
			if !res.Capabilities.GCM || !res.Capabilities.OAEP {
				t.Fatalf("%s: capabilities %+v", name, res.Capabilities)
			}
		}
	}
	// A signing time outside 1950–2049 is a GeneralizedTime, as
	// encoding/asn1 (and so pkcs7) writes it.
	sig, err := signDetached(pieces{[]byte("x")}, ids["rsa"], time.Date(2051, 3, 4, 5, 6, 7, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if got := signingTime(t, parseSigned(t, sig)); !got.Equal(time.Date(2051, 3, 4, 5, 6, 7, 0, time.UTC)) {
		t.Fatalf("signing time %v", got)
	}
	// A chain that does not lead up from the signer is refused, as pkcs7
	// refused it.
	bad := ids["rsa"]
	bad.Chain = []*x509.Certificate{ic}
	if _, err := SignDetached([]byte("x"), bad); err == nil {
		t.Fatal("signed with a chain that did not issue the certificate")
	}
	if _, err := SignDetached([]byte("x"), Identity{Cert: ids["rsa"].Cert}); err == nil {
		t.Fatal("signed without a key")
	}
}

// TestTLVIsDER: the hand-written element header at the length-octet
// boundaries is encoding/asn1's.
func TestTLVIsDER(t *testing.T) {
	for _, n := range []int{0, 1, 127, 128, 129, 255, 256, 65535, 65536, 1<<24 - 1, 1 << 24} {
		b := make([]byte, n)
		want, err := asn1.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		if got := tlv(nil, tagOctetString, b[:n/3], b[n/3:]); !bytes.Equal(got, want) {
			t.Fatalf("%d: header % x, want % x", n, got[:min(6, len(got))], want[:min(6, len(want))])
		}
		if got := tlv([]byte{9}, tagOctetString, b); !bytes.Equal(got[1:], want) || got[0] != 9 {
			t.Fatalf("%d: appended wrong", n)
		}
	}
}
