package pgp

import (
	"context"

	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/posthorn/posthorn/plugins/pgp/keystore"
	"github.com/posthorn/posthorn/plugins/pgp/pgpmail"
	"github.com/posthorn/posthorn/plugins/pgp/wkd"
	"github.com/posthorn/posthorn/sdk"
)

// DataEnv names the environment variable with the default data directory
// for the command line (the host gives the plugin its data_dir instead).
const DataEnv = "POSTHORN_PGP_DATA"

const usage = `usage: posthorn-pgp keys COMMAND [flags] [args]

  keys generate ADDR [--name NAME] [--v6] [--domain] [--lifetime 17520h]
                          make an organisation key for ADDR (--domain: for
                          every address at its domain)
  keys import [--unverified] [--address A]... FILE|-
                          import public or secret keys (secret = own key)
  keys list               list every key
  keys show FPR|ADDR      show keys with their user IDs
  keys remove FPR         delete a key
  keys pending            list partners' keys waiting for approval
  keys approve FPR        approve a pending key: used from now on, the partner is told
  keys reject FPR         remove a pending key
  keys export [--secret] FPR|ADDR
                          print the armored public (or secret) key
  keys discover ADDR [--order wkd,keyserver] [--keyserver URL] [--hkp]
                     [--timeout 10s] [--ca-file PEM] [--resolve HOST=IP:PORT]...
                          look ADDR's key up now (as the plugin would) and
                          store it

Every command takes --data DIR: the plugin's data directory (default $` + DataEnv + `).
`

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(s string) error { *m = append(*m, s); return nil }

// parseInterspersed parses flags anywhere among the arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// RunCLI runs the command line and returns the exit code.
func RunCLI(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) < 2 || args[0] != "keys" {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd := args[1]
	fs := flag.NewFlagSet("posthorn-pgp keys "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", os.Getenv(DataEnv), "the plugin's data directory")
	name := fs.String("name", "", "display name for the user ID (generate)")
	v6 := fs.Bool("v6", false, "make an RFC 9580 version 6 key (generate)")
	domain := fs.Bool("domain", false, "the key serves the whole domain (generate)")
	lifetime := fs.Duration("lifetime", 2*365*24*time.Hour, "key lifetime (generate)")
	unverified := fs.Bool("unverified", false, "mark imported keys unverified (import)")
	secret := fs.Bool("secret", false, "export the secret key (export)")
	var addrs multi
	fs.Var(&addrs, "address", "address or domain the imported key is for (import; repeatable)")
	order := fs.String("order", "wkd,keyserver", "discovery steps, comma-separated (discover)")
	ksURL := fs.String("keyserver", "", "keyserver URL (discover)")
	hkp := fs.Bool("hkp", false, "the keyserver speaks HKP, not VKS (discover)")
	timeout := fs.Duration("timeout", 10*time.Second, "per lookup (discover)")
	caFile := fs.String("ca-file", "", "extra trusted CAs, PEM (discover)")
	var resolve multi
	fs.Var(&resolve, "resolve", "HOST=IP:PORT: connect there for HOST (discover; repeatable)")
	pos, err := parseInterspersed(fs, args[2:])
	if err != nil {
		return 2
	}
	if *data == "" {
		fmt.Fprintf(stderr, "posthorn-pgp: no data directory: use --data DIR or set %s\n", DataEnv)
		return 2
	}
	need := map[string]int{"discover": 1, "generate": 1, "import": 1, "list": 0, "show": 1, "remove": 1, "export": 1,
		"pending": 0, "approve": 1, "reject": 1}
	n, ok := need[cmd]
	if !ok {
		fmt.Fprintf(stderr, "posthorn-pgp: unknown command %q\n%s", cmd, usage)
		return 2
	}
	if len(pos) != n {
		fmt.Fprintf(stderr, "posthorn-pgp keys %s: want %d argument(s), got %d\n%s", cmd, n, len(pos), usage)
		return 2
	}
	var st *keystore.SQL
	if dsn := os.Getenv(sdk.DatabaseEnv); dsn != "" {
		st, err = keystore.OpenShared(context.Background(), sdk.Database{DSN: dsn, MaxConns: 2})
	} else {
		st, err = keystore.Open(*data)
	}
	if err != nil {
		fmt.Fprintf(stderr, "posthorn-pgp: %v\n", err)
		return 1
	}
	defer st.Close()
	k := &Keys{Store: st}
	ctx := context.Background()
	fail := func(err error) int {
		fmt.Fprintf(stderr, "posthorn-pgp keys %s: %v\n", cmd, err)
		return 1
	}
	switch cmd {
	case "discover":
		cfg := Config{CAFile: *caFile, Resolve: map[string]string{}}
		for _, r := range resolve {
			h, a, ok := strings.Cut(r, "=")
			if !ok {
				return fail(fmt.Errorf("--resolve %q: want HOST=IP:PORT", r))
			}
			cfg.Resolve[h] = a
		}
		hc, err := httpClient(cfg, "", *timeout)
		if err != nil {
			return fail(err)
		}
		d := &Discovery{Keys: k, Order: strings.Split(*order, ","), TTL: time.Nanosecond, Timeout: *timeout, WKD: &wkd.Client{HTTP: hc}}
		if *ksURL != "" {
			d.Keyserver = &Keyserver{URL: *ksURL, HKP: *hkp, HTTP: hc}
		}
		f, err := d.Find(ctx, pos[0])
		if err != nil {
			return fail(err)
		}
		printKey(stdout, f.Key)
	case "generate":
		sk, err := k.Generate(ctx, pos[0], pgpmail.GenerateOptions{Name: *name, V6: *v6, Lifetime: *lifetime}, *domain)
		if err != nil {
			return fail(err)
		}
		printKey(stdout, sk)
	case "import":
		var in []byte
		if pos[0] == "-" {
			in, err = io.ReadAll(io.LimitReader(stdin, pgpmail.MaxKeySize+1))
		} else {
			in, err = os.ReadFile(pos[0])
		}
		if err != nil {
			return fail(err)
		}
		ks, err := k.Import(ctx, in, keystore.SourceImported, !*unverified, addrs)
		for _, sk := range ks {
			printKey(stdout, sk)
			for _, e := range entities([]keystore.Key{sk}) {
				if sk.Own && pgpmail.CanSign(e, time.Now()) != nil {
					fmt.Fprintf(stderr, "posthorn-pgp: warning: %s: the secret key is not usable (%v); the plugin cannot sign or decrypt with it — remove the passphrase (gpg --passwd) and import it again\n",
						sk.Fingerprint, pgpmail.CanSign(e, time.Now()))
				}
			}
		}
		if err != nil {
			return fail(err)
		}
	case "list":
		ks, err := st.List(ctx)
		if err != nil {
			return fail(err)
		}
		for _, sk := range ks {
			printKey(stdout, sk)
		}
	case "show":
		ks, err := k.Find(ctx, pos[0])
		if err != nil {
			return fail(err)
		}
		for _, sk := range ks {
			printKey(stdout, sk)
			for _, e := range entities([]keystore.Key{sk}) {
				fmt.Fprintf(stdout, "  version %d, created %s\n", e.PrimaryKey.Version, e.PrimaryKey.CreationTime.UTC().Format(time.RFC3339))
				for id := range e.Identities {
					fmt.Fprintf(stdout, "  uid %s\n", id)
				}
				if err := pgpmail.CanEncrypt(e, time.Now()); err != nil {
					fmt.Fprintf(stdout, "  not usable: %v\n", err)
				}
			}
		}
	case "pending":
		ks, err := st.List(ctx)
		if err != nil {
			return fail(err)
		}
		for _, sk := range ks {
			if sk.Pending {
				printKey(stdout, sk)
			}
		}
	case "approve":
		if err := st.Approve(ctx, pos[0]); err != nil {
			return fail(fmt.Errorf("%s: no pending key with this fingerprint", strings.ToUpper(pos[0])))
		}
		fmt.Fprintf(stdout, "approved %s\n", strings.ToUpper(pos[0]))
	case "reject":
		sk, err := st.Get(ctx, pos[0])
		if err != nil || !sk.Pending {
			return fail(fmt.Errorf("%s: no pending key with this fingerprint", strings.ToUpper(pos[0])))
		}
		if err := st.Remove(ctx, sk.Fingerprint); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "rejected %s\n", sk.Fingerprint)
	case "remove":
		if err := st.Remove(ctx, pos[0]); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "removed %s\n", strings.ToUpper(pos[0]))
	case "export":
		ks, err := k.Find(ctx, pos[0])
		if err != nil {
			return fail(err)
		}
		for _, sk := range ks {
			for _, e := range entities([]keystore.Key{sk}) {
				if *secret && e.PrivateKey == nil {
					return fail(fmt.Errorf("%s has no secret key", sk.Fingerprint))
				}
				a, err := pgpmail.Armor(e, *secret)
				if err != nil {
					return fail(err)
				}
				stdout.Write(a)
			}
		}
	}
	return 0
}

func printKey(w io.Writer, k keystore.Key) {
	kind := "public"
	if k.Own {
		kind = "own"
	}
	trust := "verified"
	if !k.Verified {
		trust = "unverified"
	}
	if k.Pending {
		trust += ",pending"
	}
	exp := "never"
	if !k.Expires.IsZero() {
		exp = k.Expires.UTC().Format("2006-01-02")
	}
	fmt.Fprintf(w, "%s %s %s %s expires=%s %s\n", k.Fingerprint, kind, k.Source, trust, exp, strings.Join(k.Addresses, ","))
}
