package smime

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/posthorn/posthorn/sdk"
)

const usage = `usage: posthorn-smime certs COMMAND [flags] [args]

Manages the store of correspondents' S/MIME certificates (the plugin's
certs.db). Flags: -db FILE (default $POSTHORN_SMIME_DB or ./certs.db).

  certs import [-ca FILE] FILE...   import PEM/DER certificates (with -ca:
                                    only those chaining to the CAs in FILE)
  certs list                        list the certificates
  certs show ADDRESS|FINGERPRINT    show details
  certs remove ADDRESS|FINGERPRINT  remove (fingerprint: at least 8 hex digits)
  certs export [-der] ADDRESS       write the usable certificate to stdout
  certs pending                     list certificates waiting for approval
  certs approve ADDRESS|FINGERPRINT approve: used from now on, the partner is told
  certs reject ADDRESS|FINGERPRINT  reject a pending certificate (removed)

Started by the Posthorn host (POSTHORN_PLUGIN set), it serves as a plugin.
`

// CLI runs the command line; it returns the exit code.
func CLI(args []string, stdout, stderr io.Writer) int {
	if len(args) < 2 || args[0] != "certs" {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd := args[1]
	fs := flag.NewFlagSet("posthorn-smime certs "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	defDB := os.Getenv("POSTHORN_SMIME_DB")
	if defDB == "" {
		defDB = "certs.db"
	}
	db := fs.String("db", defDB, "certificate store (SQLite file)")
	ca := fs.String("ca", "", "PEM file of trusted CAs (import)")
	der := fs.Bool("der", false, "DER instead of PEM (export)")
	if err := fs.Parse(args[2:]); err != nil {
		return 2
	}
	var store Store
	var err error
	if dsn := os.Getenv(sdk.DatabaseEnv); dsn != "" {
		store, err = OpenShared(context.Background(), sdk.Database{DSN: dsn, MaxConns: 2})
	} else {
		store, err = OpenSQLite(*db)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer store.Close()
	ctx := context.Background()
	now := time.Now()
	fail := func(err error) int {
		fmt.Fprintln(stderr, "posthorn-smime:", err)
		return 1
	}
	switch cmd {
	case "import":
		if fs.NArg() == 0 {
			fmt.Fprint(stderr, usage)
			return 2
		}
		var roots *x509.CertPool
		if *ca != "" {
			b, err := os.ReadFile(*ca)
			if err != nil {
				return fail(err)
			}
			roots = x509.NewCertPool()
			if !roots.AppendCertsFromPEM(b) {
				return fail(fmt.Errorf("%s: no PEM certificate", *ca))
			}
		}
		code := 0
		for _, f := range fs.Args() {
			b, err := os.ReadFile(f)
			if err != nil {
				code = fail(err)
				continue
			}
			certs, err := ParsePEMCerts(b)
			if err != nil {
				code = fail(fmt.Errorf("%s: %w", f, err))
				continue
			}
			for _, c := range certs {
				if c.IsCA {
					continue
				}
				if err := CheckCert(c, certs, VerifyOptions{Roots: roots, Now: now}); err != nil {
					code = fail(fmt.Errorf("%s: %w", f, err))
					continue
				}
				recs := NewRecords(c, Capabilities{}, "import", now)
				if len(recs) == 0 {
					code = fail(fmt.Errorf("%s: %q names no mail address", f, c.Subject.String()))
				}
				for _, r := range recs {
					if err := store.Put(ctx, r); err != nil {
						return fail(err)
					}
					fmt.Fprintf(stdout, "imported %s %s\n", r.Address, r.Fingerprint[:16])
				}
			}
		}
		return code
	case "list":
		recs, err := store.List(ctx)
		if err != nil {
			return fail(err)
		}
		for _, r := range recs {
			state, why := "valid", ""
			if now.After(r.NotAfter) {
				state = "expired"
			} else if now.Before(r.NotBefore) {
				state = "not-yet-valid"
			} else if r.Pending {
				state = "pending"
			} else if err := encryptionProblem(r); err != nil {
				state, why = "sign-only", "  (cannot encrypt: "+err.Error()+")"
			}
			fmt.Fprintf(stdout, "%-32s %s  %s  %-13s %s%s\n", r.Address, r.Fingerprint[:16], r.NotAfter.Format("2006-01-02"), state, r.Source, why)
		}
		return 0
	case "pending":
		recs, err := store.List(ctx)
		if err != nil {
			return fail(err)
		}
		for _, r := range recs {
			if r.Pending {
				fmt.Fprintf(stdout, "%-32s %s  %s  %s  %s\n", r.Address, r.Fingerprint, r.NotAfter.Format("2006-01-02"), r.Source, r.Subject)
			}
		}
		return 0
	case "approve", "reject":
		if fs.NArg() != 1 {
			fmt.Fprint(stderr, usage)
			return 2
		}
		key := strings.ToLower(fs.Arg(0))
		if cmd == "approve" {
			n, err := store.Approve(ctx, key)
			if err != nil {
				return fail(err)
			}
			if n == 0 {
				return fail(fmt.Errorf("no pending certificate for %s", key))
			}
			fmt.Fprintf(stdout, "approved %d\n", n)
			return 0
		}
		// Reject removes only pending records.
		recs, err := find(ctx, store, key)
		if err != nil {
			return fail(err)
		}
		n := 0
		for _, r := range recs {
			if !r.Pending {
				continue
			}
			if _, err := store.Remove(ctx, r.Fingerprint); err != nil {
				return fail(err)
			}
			n++
		}
		if n == 0 {
			return fail(fmt.Errorf("no pending certificate for %s", key))
		}
		fmt.Fprintf(stdout, "rejected %d\n", n)
		return 0
	case "show", "remove", "export":
		if fs.NArg() != 1 {
			fmt.Fprint(stderr, usage)
			return 2
		}
		key := strings.ToLower(fs.Arg(0))
		if cmd == "remove" {
			n, err := store.Remove(ctx, key)
			if err != nil {
				return fail(err)
			}
			fmt.Fprintf(stdout, "removed %d\n", n)
			if n == 0 {
				return 1
			}
			return 0
		}
		recs, err := find(ctx, store, key)
		if err != nil {
			return fail(err)
		}
		if len(recs) == 0 {
			return fail(fmt.Errorf("no certificate for %s", key))
		}
		if cmd == "export" {
			r := Usable(recs, now)
			if r == nil {
				return fail(fmt.Errorf("no valid certificate for %s", key))
			}
			if *der {
				stdout.Write(r.DER)
			} else {
				pem.Encode(stdout, &pem.Block{Type: "CERTIFICATE", Bytes: r.DER})
			}
			return 0
		}
		for _, r := range recs {
			enc := "usable"
			if err := encryptionProblem(r); err != nil {
				enc = "not usable: " + err.Error()
			}
			fmt.Fprintf(stdout, "address:     %s\nfingerprint: %s\nsubject:     %s\nissuer:      %s\nvalid:       %s to %s\nencryption:  %s\ncapabilities: aes256-gcm=%v rsa-oaep=%v\nsource:      %s (added %s)\n\n",
				r.Address, r.Fingerprint, r.Subject, r.Issuer, r.NotBefore.Format(time.RFC3339), r.NotAfter.Format(time.RFC3339),
				enc, r.GCM, r.OAEP, r.Source, r.Added.Format(time.RFC3339))
		}
		return 0
	}
	fmt.Fprint(stderr, usage)
	return 2
}

// encryptionProblem is why r's certificate cannot be encrypted to, or nil.
func encryptionProblem(r CertRecord) error {
	c, err := r.Cert()
	if err != nil {
		return err
	}
	return EncryptionUsable(c)
}

func find(ctx context.Context, s Store, key string) ([]CertRecord, error) {
	if strings.Contains(key, "@") {
		return s.ForAddress(ctx, key)
	}
	all, err := s.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []CertRecord
	for _, r := range all {
		if len(key) >= 8 && strings.HasPrefix(r.Fingerprint, key) {
			out = append(out, r)
		}
	}
	return out, nil
}
