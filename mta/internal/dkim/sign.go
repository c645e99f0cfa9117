package dkim

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"

	msgdkim "github.com/emersion/go-msgauth/dkim"
)

// SignedHeaders are the header fields signed (RFC 6376 section 5.4.1's
// recommended set). From is listed twice: the second, absent instance
// "oversigns" it (section 5.4.2), so that a From field added later breaks
// the signature. Fields listed but absent from a message are signed as
// empty, which likewise stops them from being added in transit.
var SignedHeaders = []string{
	"From", "From",
	"To", "Cc", "Subject", "Date", "Message-ID", "Reply-To",
	"In-Reply-To", "References", "MIME-Version", "Content-Type",
	"Content-Transfer-Encoding",
}

// MemoryLimit is how much of a message Sign keeps in memory when msg
// cannot seek; beyond it the message is spooled to a temporary file.
const MemoryLimit = 4 << 20

// Signer signs outgoing messages with the keys of their domain.
type Signer struct {
	keys map[string][]*Key // by lower-case domain
	// TempDir is where messages larger than MemoryLimit are spooled while
	// signing (default os.TempDir()).
	TempDir string
}

// NewSigner returns a signer for keys. Several keys for one domain (e.g.
// RSA and Ed25519, RFC 8463 section 5) all sign each message.
func NewSigner(keys []*Key) *Signer {
	s := &Signer{keys: make(map[string][]*Key)}
	for _, k := range keys {
		if k == nil || k.Signer == nil {
			continue
		}
		d := strings.ToLower(strings.TrimSuffix(k.Domain, "."))
		nk := *k
		nk.Domain = d
		s.keys[d] = append(s.keys[d], &nk)
	}
	return s
}

// KeysFor returns the keys that sign mail from domain (or an address at
// it): those of the domain itself, else of its nearest parent domain that
// has keys (a parent-domain signature is still aligned under DMARC's
// relaxed mode). Nil if there is none.
func (s *Signer) KeysFor(from string) []*Key {
	if s == nil {
		return nil
	}
	d := from
	if i := strings.LastIndexByte(d, '@'); i >= 0 {
		d = d[i+1:]
	}
	d = strings.ToLower(strings.Trim(strings.TrimSpace(d), ".>"))
	for d != "" {
		if ks := s.keys[d]; len(ks) > 0 {
			return ks
		}
		i := strings.IndexByte(d, '.')
		if i < 0 {
			break
		}
		d = d[i+1:]
		if !strings.Contains(d, ".") {
			break // never sign with a TLD's key
		}
	}
	return nil
}

// Sign writes msg (a whole RFC 5322 message with CRLF line endings) to w,
// preceded by one DKIM-Signature header field per key of from's domain
// (from is the header From domain or address, or the envelope sender).
// Canonicalization is relaxed/relaxed, the hash SHA-256. A message whose
// domain has no key is copied unchanged.
//
// The signatures must precede the message, so the message is read twice:
// if msg is an io.ReadSeeker (a spool file) it is rewound, else it is
// kept in memory up to MemoryLimit and in a temporary file beyond.
func (s *Signer) Sign(from string, msg io.Reader, w io.Writer) error {
	keys := s.KeysFor(from)
	if len(keys) == 0 {
		_, err := io.Copy(w, msg)
		return err
	}
	signers := make([]*msgdkim.Signer, 0, len(keys))
	closeAll := func() {
		for _, sg := range signers {
			sg.Close()
		}
	}
	writers := make([]io.Writer, 0, len(keys)+1)
	for _, k := range keys {
		sg, err := msgdkim.NewSigner(&msgdkim.SignOptions{
			Domain:                 k.Domain,
			Selector:               k.Selector,
			Signer:                 k.Signer,
			HeaderCanonicalization: msgdkim.CanonicalizationRelaxed,
			BodyCanonicalization:   msgdkim.CanonicalizationRelaxed,
			HeaderKeys:             SignedHeaders,
		})
		if err != nil {
			closeAll()
			return fmt.Errorf("dkim: key %s: %w", k.RecordName(), err)
		}
		signers = append(signers, sg)
		writers = append(writers, sg)
	}

	var replay func() (io.Reader, error)
	var cleanup func()
	if rs, ok := msg.(io.ReadSeeker); ok {
		start, err := rs.Seek(0, io.SeekCurrent)
		if err != nil {
			closeAll()
			return fmt.Errorf("dkim: %w", err)
		}
		replay = func() (io.Reader, error) {
			_, err := rs.Seek(start, io.SeekStart)
			return rs, err
		}
	} else {
		sp := &spool{dir: s.TempDir}
		writers = append(writers, sp)
		replay = sp.reader
		cleanup = sp.close
	}
	if cleanup != nil {
		defer cleanup()
	}

	if _, err := io.Copy(io.MultiWriter(writers...), msg); err != nil {
		closeAll()
		return fmt.Errorf("dkim: reading message: %w", err)
	}
	var hdr strings.Builder
	for i, sg := range signers {
		if err := sg.Close(); err != nil {
			closeAll()
			return fmt.Errorf("dkim: signing with %s: %w", keys[i].RecordName(), err)
		}
		hdr.WriteString(sg.Signature())
	}
	r, err := replay()
	if err != nil {
		return fmt.Errorf("dkim: rereading message: %w", err)
	}
	if _, err := io.WriteString(w, hdr.String()); err != nil {
		return err
	}
	_, err = io.Copy(w, r)
	return err
}

// spool keeps what is written to it in memory up to MemoryLimit, then in
// a temporary file.
type spool struct {
	dir  string
	buf  bytes.Buffer
	file *os.File
}

func (s *spool) Write(p []byte) (int, error) {
	if s.file == nil && s.buf.Len()+len(p) > MemoryLimit {
		f, err := os.CreateTemp(s.dir, "posthorn-dkim-*")
		if err != nil {
			return 0, err
		}
		os.Remove(f.Name()) // unlinked: gone when closed, even after a crash
		s.file = f
		if _, err := f.Write(s.buf.Bytes()); err != nil {
			return 0, err
		}
		s.buf = bytes.Buffer{}
	}
	if s.file != nil {
		return s.file.Write(p)
	}
	return s.buf.Write(p)
}

func (s *spool) reader() (io.Reader, error) {
	if s.file != nil {
		_, err := s.file.Seek(0, io.SeekStart)
		return s.file, err
	}
	return &s.buf, nil
}

func (s *spool) close() {
	if s.file != nil {
		s.file.Close()
	}
}
