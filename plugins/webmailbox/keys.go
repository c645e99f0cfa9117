package webmailbox

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/posthorn/posthorn/sdk"
)

// UploadedKey is a certificate or public key a recipient uploaded.
type UploadedKey struct {
	Kind        string // "smime" or "pgp"
	Fingerprint string // SHA-256 of the certificate (smime), key fingerprint (pgp)
	Armored     string // PEM certificate or ASCII-armored public key
}

// Upload errors the page explains in the user's language.
var (
	errPrivateKey   = errors.New("this is a private key: upload only the public key or certificate")
	errKeyOtherAddr = errors.New("not for this address")
)

// ParseUploadedKey accepts an X.509 certificate (PEM or DER) or an OpenPGP
// public key (armored or binary) that names addr.
func ParseUploadedKey(data []byte, addr string) (*UploadedKey, error) {
	addr = normAddr(addr)
	der := data
	if blk, _ := pem.Decode(data); blk != nil {
		if blk.Type != "CERTIFICATE" {
			if strings.Contains(blk.Type, "PRIVATE") {
				return nil, errPrivateKey
			}
			return nil, fmt.Errorf("PEM block %q is not a certificate", blk.Type)
		}
		der = blk.Bytes
	}
	if cert, err := x509.ParseCertificate(der); err == nil {
		ok := false
		for _, e := range cert.EmailAddresses {
			ok = ok || strings.EqualFold(e, addr)
		}
		if !ok {
			return nil, fmt.Errorf("%w: the certificate is not for %s", errKeyOtherAddr, addr)
		}
		if cert.PublicKeyAlgorithm == x509.UnknownPublicKeyAlgorithm {
			return nil, errors.New("the certificate's key type is not supported")
		}
		sum := sha256.Sum256(der)
		return &UploadedKey{Kind: "smime", Fingerprint: hex.EncodeToString(sum[:]),
			Armored: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}, nil
	}
	var el openpgp.EntityList
	var err error
	if bytes.Contains(data, []byte("-----BEGIN PGP")) {
		el, err = openpgp.ReadArmoredKeyRing(bytes.NewReader(data))
	} else {
		el, err = openpgp.ReadKeyRing(bytes.NewReader(data))
	}
	if err != nil || len(el) != 1 {
		return nil, errors.New("neither a certificate nor exactly one OpenPGP public key")
	}
	e := el[0]
	if e.PrivateKey != nil {
		return nil, errPrivateKey
	}
	ok := false
	for _, id := range e.Identities {
		ok = ok || strings.EqualFold(id.UserId.Email, addr)
	}
	if !ok {
		return nil, fmt.Errorf("%w: the key has no user id for %s", errKeyOtherAddr, addr)
	}
	var buf bytes.Buffer
	if err := e.Serialize(&buf); err != nil {
		return nil, err
	}
	return &UploadedKey{Kind: "pgp", Fingerprint: strings.ToUpper(hex.EncodeToString(e.PrimaryKey.Fingerprint)),
		Armored: armorKey(buf.Bytes())}, nil
}

func (sv *Service) keysForm(w http.ResponseWriter, r *http.Request, se *session) {
	p := sv.newPage(w, r, se)
	p.Title = p.T("keys")
	sv.render(w, http.StatusOK, "keys", p)
}

// keysPost takes an uploaded certificate or key and hands it to the key
// plugins as event webmailbox.key_uploaded (attributes kind, fingerprint,
// key).
func (sv *Service) keysPost(w http.ResponseWriter, r *http.Request, se *session) {
	p := sv.newPage(w, r, se)
	p.Title = p.T("keys")
	f, _, err := r.FormFile("key")
	var data []byte
	if err == nil {
		data, err = io.ReadAll(io.LimitReader(f, 256<<10))
		f.Close()
	}
	var k *UploadedKey
	if err == nil {
		k, err = ParseUploadedKey(data, se.mb.Address)
	}
	if err != nil {
		switch {
		case errors.Is(err, errPrivateKey):
			p.Error = "key_private"
		case errors.Is(err, errKeyOtherAddr):
			p.Error = "key_other_addr"
		default:
			p.Error = "key_bad"
		}
		sv.render(w, http.StatusUnprocessableEntity, "keys", p)
		return
	}
	if err := sv.host.Emit(r.Context(), sdk.Event{Type: "webmailbox.key_uploaded", Recipient: se.mb.Address, Sender: se.mb.Address,
		Time: sv.Now(), Language: se.mb.Language,
		Attributes: map[string]string{"kind": k.Kind, "fingerprint": k.Fingerprint, "key": k.Armored}}); err != nil {
		sv.log.Error("emitting an uploaded key", "error", err)
		p.Error = "err_internal"
		sv.render(w, http.StatusBadGateway, "keys", p)
		return
	}
	sv.log.Info("key uploaded", "mailbox", se.mb.Address, "kind", k.Kind, "fingerprint", k.Fingerprint)
	p.Notice = "key_ok"
	sv.render(w, http.StatusOK, "keys", p)
}

func armorKey(b []byte) string {
	var out bytes.Buffer
	w, err := armor.Encode(&out, openpgp.PublicKeyType, nil)
	if err != nil {
		return ""
	}
	w.Write(b)
	w.Close()
	return out.String()
}
