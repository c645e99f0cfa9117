package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/posthorn/posthorn/testbed/loadgen"
)

// smimeSetup is what `benchcompare -smime` needs (issue 19.4): the
// posthorn-smime plugin binary and a throw-away PKI — a CA, the sender's
// signing identity (load@bench.test) and certificates for the sink's
// recipients, which every posthorn+smime run imports into the plugin's
// store, so that every relayed message is signed and encrypted (RSA 2048,
// the plugin's defaults; -smime-key ec: P-256).
type smimeSetup struct {
	dir, plugin         string
	ca, senderCrt, sKey string
	rcptCrts            []string
	keyName             string // "RSA 2048" or "P-256"
	rsaSigner           string // the plugin's rsa_signer: "auto", "go" or "openssl"
}

// newSMIME makes the PKI: keyType "rsa" (RSA 2048 identities: PKCS #1
// v1.5 signatures, RSA key transport) or "ec" (P-256 identities: ECDSA
// signatures, ECDH key agreement). The CA is RSA either way.
func newSMIME(pluginBin string, rcpts int, keyType, rsaSigner string) (*smimeSetup, error) {
	if keyType != "rsa" && keyType != "ec" {
		return nil, fmt.Errorf("-smime-key %q: want rsa or ec", keyType)
	}
	if rsaSigner != "auto" && rsaSigner != "go" && rsaSigner != "openssl" {
		return nil, fmt.Errorf("-smime-rsa-signer %q: want auto, go or openssl", rsaSigner)
	}
	dir, err := os.MkdirTemp("", "phsmime")
	if err != nil {
		return nil, err
	}
	s := &smimeSetup{dir: dir, plugin: pluginBin, keyName: map[string]string{"rsa": "RSA 2048", "ec": "P-256"}[keyType], rsaSigner: rsaSigner}
	if keyType == "rsa" {
		s.keyName += ", rsa_signer " + rsaSigner
	}
	if s.plugin == "" {
		s.plugin = filepath.Join(dir, "posthorn-smime")
		out, err := exec.Command("go", "build", "-o", s.plugin, "./plugins/smime/cmd/posthorn-smime").CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("building posthorn-smime (run from the repository root): %v\n%s", err, out)
		}
	}
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "benchcompare S/MIME CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(7 * 24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	s.ca = filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(s.ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		return nil, err
	}
	issue := func(name, addr string) (string, string, error) {
		var key crypto.Signer
		usage := x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
		if keyType == "ec" {
			key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			usage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement
		} else {
			key, err = rsa.GenerateKey(rand.Reader, 2048)
		}
		if err != nil {
			return "", "", err
		}
		serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
		tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: addr}, EmailAddresses: []string{addr},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(7 * 24 * time.Hour),
			KeyUsage:    usage,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
		if err != nil {
			return "", "", err
		}
		crt, kf := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
		kd, _ := x509.MarshalPKCS8PrivateKey(key)
		if err := os.WriteFile(crt, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
			return "", "", err
		}
		return crt, kf, os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600)
	}
	if s.senderCrt, s.sKey, err = issue("sender", "load@bench.test"); err != nil {
		return nil, err
	}
	for i := range rcpts {
		crt, _, err := issue(fmt.Sprintf("r%d", i), fmt.Sprintf("r%d@sink.test", i))
		if err != nil {
			return nil, err
		}
		s.rcptCrts = append(s.rcptCrts, crt)
	}
	return s, nil
}

func (s *smimeSetup) close() { os.RemoveAll(s.dir) }

// config is the posthorn.toml addition: the plugin, and a rule that
// signs and encrypts everything to sink.test. min_backoff is short so
// that a message deferred while the plugin was still starting comes
// back soon.
func (s *smimeSetup) config(dataDir string) string {
	return fmt.Sprintf(`
[[plugin]]
name = "smime"
path = %q
timeout = "60s"
on_failure = "tempfail"
data_dir = %q
[plugin.config]
trust_store = %q
rsa_signer = %q
[[plugin.config.identity]]
cert = %q
key = %q

[[encryption.rule]]
recipients = ["sink.test"]
encrypt = "opportunistic"
methods = ["smime"]
sign = true
`, s.plugin, dataDir, s.ca, s.rsaSigner, s.senderCrt, s.sKey)
}

// prepare imports the recipients' certificates into a fresh plugin
// data directory.
func (s *smimeSetup) prepare(dataDir string) error {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}
	args := append([]string{"certs", "import", "-db", filepath.Join(dataDir, "certs.db"), "-ca", s.ca}, s.rcptCrts...)
	if out, err := exec.Command(s.plugin, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("posthorn-smime certs import: %v\n%s", err, out)
	}
	return nil
}

// warmUp sends one message and waits until it reaches the sink sealed,
// so that the measured run starts with the plugin running.
func warmUp(addr string, snk *sink) error {
	before := snk.sealed.Load()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := loadgen.Run(ctx, loadgen.Config{Addr: addr, N: 1, SizeKB: 10, From: "load@bench.test", To: []string{"r0@sink.test"}}); err != nil {
		return err
	}
	for snk.sealed.Load() == before {
		if ctx.Err() != nil {
			return fmt.Errorf("warm-up message not delivered encrypted: %w", ctx.Err())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}
