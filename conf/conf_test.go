package conf

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

func TestDefault(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(DefaultFile, DefaultTOML())
	if err != nil {
		t.Fatalf("default config has errors:\n%v", err)
	}
	abs := func(p string) string { return filepath.Join(wd, p) }
	want := &Config{
		Hostname: "localhost",
		Log:      Log{Level: "info", Format: "text"},
		SMTP: SMTP{
			MX: "127.0.0.1:2525", Submission: "127.0.0.1:2587", Submissions: "127.0.0.1:2465",
			MaxMessageSize: 50 << 20, MaxRecipients: 100, MaxLineLength: 0,
			MaxSessionsPerIP: 20, MaxSessions: 1000, ReservedSessions: 50, MaxConnectionRatePerIP: 120,
			CommandTimeout: Duration(5 * time.Minute), DataTimeout: Duration(10 * time.Minute),
			ClientNetworks: []string{"127.0.0.0/8", "::1/128"},
		},
		TLS: TLS{SelfSignedDir: abs("var/tls")},
		Auth: Auth{PasswordFile: abs("var/passwd"), MaxConcurrentChecks: 2, MaxFailuresPerIP: 10,
			MaxFailuresPerAccount: 30, FailureWindow: Duration(15 * time.Minute), BlockTime: Duration(15 * time.Minute)},
		Queue: Queue{
			Dir:        abs("var/spool"),
			MinBackoff: Duration(5 * time.Minute), MaxBackoff: Duration(4000 * time.Second),
			MaxLifetime: Duration(5 * 24 * time.Hour), BounceLifetime: Duration(5 * 24 * time.Hour),
			Workers: 20, MinFreeSpace: 100 << 20, Maildrop: abs("var/maildrop"),
		},
		Local:   Local{MaildirRoot: abs("var/mail"), RecipientDelimiter: "+"},
		Domains: []Domain{{Name: "example.test", Mailboxes: []string{"postmaster"}}},
		Metrics: Metrics{Address: "127.0.0.1:9425"},
		Control: Control{Socket: abs("var/control.sock")},
		Directory: Directory{Kind: "static", Path: abs("var/directory.db"), CacheSize: 100000,
			CacheTTL: Duration(time.Minute)},
		Database: Database{MaxConns: 10},
		Dovecot:  Dovecot{Service: "smtp", Timeout: Duration(10 * time.Second)},
		DNS:      DNS{TrustAD: "auto", Timeout: Duration(5 * time.Second)},
		Outbound: Outbound{
			TLSLevel: TLSMay, Concurrency: 100, PerDomainConcurrency: 20,
			ConnectTimeout: Duration(30 * time.Second), CommandTimeout: Duration(5 * time.Minute),
			DataTimeout: Duration(10 * time.Minute), ConnectionReuseTime: Duration(5 * time.Second),
			MaxMessagesPerConnection: 100, IPv6: true, SourceAddress: []string{},
		},
		Testing:    Testing{PortMap: map[string]int{}},
		AuthRes:    AuthRes{Enabled: true, Timeout: Duration(20 * time.Second)},
		Encryption: Encryption{SubjectTag: "[secure]", TriggerHeader: "X-Posthorn-Encrypt", Methods: []string{"webmailbox"}},
		Transports: []Transport{{Domain: "partner.example", Kind: "maildir", Host: abs("var/outbound/partner.example")}},
		Plugins: []Plugin{{Name: "notify", Path: abs("bin/posthorn-notify"), Timeout: Duration(30 * time.Second), OnFailure: "tempfail", LocalSubmissions: "inspect",
			DataDir: abs("var/plugins/notify"), Config: PluginConfig{"from": "postmaster@example.test", "from_name": "Posthorn"}},
			{Name: "webmailbox", Path: abs("bin/posthorn-webmailbox"), Timeout: Duration(60 * time.Second), OnFailure: "tempfail", LocalSubmissions: "inspect",
				DataDir: abs("var/plugins/webmailbox"), Config: PluginConfig{"base_url": "http://127.0.0.1:8480", "listen": "127.0.0.1:8480",
					"allowed_recipients": []any{"*@example.test"}}}},
		MTASTS: MTASTS{Enabled: true, CacheDir: abs("var/mta-sts"), Refresh: Duration(time.Hour), ServeMode: "testing", ServeMX: []string{},
			ServeMaxAge: Duration(7 * 24 * time.Hour)},
		DANE:   DANE{Enabled: true},
		TLSRPT: TLSRPT{StateDir: abs("var/tls-rpt")},
		SecureAlias: SecureAlias{Subdomain: "secure", Users: []string{"*"}, Level: TLSEncrypt,
			Levels: map[string]TLSLevel{}},
		Milters: Milters{MX: []string{}, Submission: []string{}, Local: []string{}},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("default config\n got %+v\nwant %+v", c, want)
	}
	if !c.IsLocalDomain("EXAMPLE.test") || c.IsLocalDomain("example.org") {
		t.Error("IsLocalDomain")
	}
	if d := c.Domain("Example.Test."); d == nil || d != &c.Domains[0] {
		t.Error("Domain")
	}
	if c.Domain("nope.test") != nil {
		t.Error("Domain(nope.test) != nil")
	}
	// DefaultTOML hands out a copy.
	b := DefaultTOML()
	b[0] = 'X'
	if DefaultTOML()[0] == 'X' {
		t.Error("DefaultTOML returns shared memory")
	}
}

// Every key of the schema is written (and so documented) in default.toml.
func TestDefaultMentionsEveryKey(t *testing.T) {
	var walk func(prefix string, t reflect.Type, out *[]string)
	walk = func(prefix string, rt reflect.Type, out *[]string) {
		for name, i := range tomlFields(rt) {
			ft := rt.Field(i).Type
			key := joinKey(prefix, name)
			switch {
			case ft.Kind() == reflect.Struct && ft != reflect.TypeFor[Duration]():
				walk(key, ft, out)
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				walk(indexKey(key, 0), ft.Elem(), out)
			default:
				*out = append(*out, key)
			}
		}
	}
	var keys []string
	walk("", reflect.TypeFor[Config](), &keys)
	text := string(DefaultTOML())
	pos := buildPosIndex(text)
	for _, k := range keys {
		if k == "domain[0].aliases" {
			continue // shown as a comment
		}
		// Tables that are empty by default are documented by a commented
		// example, which must show every field.
		if tbl, field, ok := strings.Cut(k, "[0]."); ok && (tbl == "tls_policy" || tbl == "transport" || tbl == "dkim.key" || tbl == "plugin" || tbl == "encryption.rule" || tbl == "milter" || tbl == "admin.token") {
			if !strings.Contains(text, "#   [["+tbl+"]]") || !strings.Contains(text, "#   "+field+" = ") && !strings.Contains(text, "#   ["+tbl+"."+field+"]") {
				t.Errorf("default.toml's commented example does not show %s", k)
			}
			continue
		}
		if !pos.has(k) {
			t.Errorf("default.toml does not set %s", k)
		}
	}
}

// TestDefaultPluginsOnlyInDefault: the embedded default runs notify from
// ./bin; an operator's file gets only the plugins it lists.
func TestDefaultPluginsOnlyInDefault(t *testing.T) {
	c, err := Parse("x.toml", []byte("hostname = \"mx.example.org\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Plugins) != 0 {
		t.Fatalf("a file without [[plugin]] got %+v", c.Plugins)
	}
}

func TestFileReplacesDefaults(t *testing.T) {
	c, err := Parse("x.toml", []byte(`
[smtp]
client_networks = ["10.0.0.0/8"]
[[domain]]
name = "a.example"
[[domain]]
name = "b.example"
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.SMTP.ClientNetworks; !reflect.DeepEqual(got, []string{"10.0.0.0/8"}) {
		t.Errorf("client_networks = %q", got)
	}
	if len(c.Domains) != 2 || c.Domains[0].Name != "a.example" || c.Domains[0].Mailboxes != nil {
		t.Errorf("domains = %+v", c.Domains)
	}
	if c.IsLocalDomain("example.test") {
		t.Error("default domain kept")
	}
	if c.SMTP.MaxRecipients != 100 || c.Queue.Workers != 20 {
		t.Error("defaults of unset keys lost")
	}
}

func TestRelativePaths(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "posthorn.toml")
	data := []byte(`
[queue]
dir = "spool"
[local]
lmtp = "unix:lmtp.sock"
maildir_root = "/srv/mail"
[tls]
cert_file = "../certs/c.pem"
key_file = "k.pem"
[[domain]]
name = "a.example"
lmtp = "tcp:127.0.0.1:24"
[[domain]]
name = "b.example"
lmtp = "unix:./b.sock"
`)
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, load := range []func() (*Config, error){
		func() (*Config, error) { return Load(file) },
		func() (*Config, error) { return Parse(file, data) },
	} {
		c, err := load()
		if err != nil {
			t.Fatal(err)
		}
		checks := [][2]string{
			{c.Queue.Dir, filepath.Join(dir, "spool")},
			{c.Local.LMTP, "unix:" + filepath.Join(dir, "lmtp.sock")},
			{c.Local.MaildirRoot, "/srv/mail"},
			{c.TLS.CertFile, filepath.Join(filepath.Dir(dir), "certs/c.pem")},
			{c.TLS.KeyFile, filepath.Join(dir, "k.pem")},
			{c.TLS.SelfSignedDir, filepath.Join(dir, "var/tls")},
			{c.Auth.PasswordFile, filepath.Join(dir, "var/passwd")},
			{c.Control.Socket, filepath.Join(dir, "var/control.sock")},
			{c.Domains[0].LMTP, "tcp:127.0.0.1:24"},
			{c.Domains[1].LMTP, "unix:" + filepath.Join(dir, "b.sock")},
			{c.Local.RecipientDelimiter, "+"},
		}
		for _, c := range checks {
			if got, want := c[0], c[1]; got != want {
				t.Errorf("got %q, want %q", got, want)
			}
		}
	}
	// A name that is not a file: relative to the current directory.
	wd, _ := os.Getwd()
	c, err := Parse("no/such/file.toml", []byte(`queue.dir = "q"`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Queue.Dir != filepath.Join(wd, "q") {
		t.Errorf("queue.dir = %q", c.Queue.Dir)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("err = %v, want not-exist", err)
	}
}

func TestErrorsFormat(t *testing.T) {
	_, err := Parse("posthorn.toml", []byte("[smtp]\nmax_recipients = 0\nmax_sessions = 0\n"))
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 2 {
		t.Fatalf("err = %#v", err)
	}
	want := "posthorn.toml:2: smtp.max_recipients: must be at least 1\nposthorn.toml:3: smtp.max_sessions: must be at least 1"
	if err.Error() != want {
		t.Errorf("got %q\nwant %q", err.Error(), want)
	}
	var one *Error
	if !errors.As(err, &one) || one.Key != "smtp.max_recipients" || one.Line != 2 {
		t.Errorf("errors.As(*Error) = %+v", one)
	}
	if s := (&Error{File: "f", Msg: "m"}).Error(); s != "f: m" {
		t.Errorf("no line, no key: %q", s)
	}
}

func TestValidAddresses(t *testing.T) {
	for _, a := range []string{"127.0.0.1:0", ":25", "[::1]:587", "localhost:2525", "mx.example.net:25", "0.0.0.0:65535"} {
		if _, err := Parse("x", []byte(`smtp.mx_address = "`+a+`"`)); err != nil {
			t.Errorf("%s: %v", a, err)
		}
	}
	for _, l := range []string{"tcp:127.0.0.1:24", "tcp:[::1]:24", "tcp:dovecot.internal:24", "unix:/run/dovecot/lmtp"} {
		if _, err := Parse("x", []byte(`local.lmtp = "`+l+`"`)); err != nil {
			t.Errorf("%s: %v", l, err)
		}
	}
	for _, l := range []string{"tcp:127.0.0.1:0", "tcp::24", "udp:1.2.3.4:24", "/run/lmtp", "tcp:127.0.0.1"} {
		if _, err := Parse("x", []byte(`local.lmtp = "`+l+`"`)); err == nil {
			t.Errorf("%s: no error", l)
		}
	}
}

func TestDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"5m": 5 * time.Minute, "4000s": 4000 * time.Second, "5d": 120 * time.Hour,
		"1d12h": 36 * time.Hour, "1.5d": 36 * time.Hour, "1d 12h": 36 * time.Hour,
		"0": 0, "250ms": 250 * time.Millisecond, "1h30m": 90 * time.Minute, "-2m": -2 * time.Minute,
	} {
		var d Duration
		if err := d.UnmarshalText([]byte(in)); err != nil || d.D() != want {
			t.Errorf("%q: got %v, %v; want %v", in, d.D(), err, want)
		}
	}
	for _, in := range []string{"", "5", "5w", "d", "1.2.3s", "5 minutes", "99999999999d", "1e3s", "--5m", "h5"} {
		var d Duration
		if err := d.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("%q: no error (got %v)", in, d.D())
		}
	}
	for d, want := range map[time.Duration]string{
		0: "0s", 5 * time.Minute: "5m", 4000 * time.Second: "1h6m40s", 120 * time.Hour: "5d",
		36 * time.Hour: "1d12h", 1500 * time.Millisecond: "1.5s", 24*time.Hour + time.Millisecond: "1d1ms",
		-time.Hour: "-1h",
	} {
		if got := Duration(d).String(); got != want {
			t.Errorf("%v: got %q, want %q", d, got, want)
		}
		back, err := ParseDuration(Duration(d).String())
		if err != nil || back != d {
			t.Errorf("%v: round trip gave %v, %v", d, back, err)
		}
	}
}

func TestSize(t *testing.T) {
	for in, want := range map[string]int64{
		"123": 123, "50MB": 50e6, "10MiB": 10 << 20, "512KB": 512000, "1GB": 1e9, "1gib": 1 << 30,
		"2KiB": 2048, "7B": 7, "1.5KB": 1500, "3 MiB": 3 << 20, "0": 0, "1TiB": 1 << 40,
	} {
		var s Size
		if err := s.UnmarshalText([]byte(in)); err != nil || s.Bytes() != want {
			t.Errorf("%q: got %d, %v; want %d", in, s.Bytes(), err, want)
		}
	}
	for _, in := range []string{"", "M", "50M", "-1", "1XB", "10000000TB", "1..2MB", "MB5"} {
		var s Size
		if err := s.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("%q: no error (got %d)", in, s)
		}
	}
	for s, want := range map[Size]string{0: "0", 123: "123", 50 << 20: "50MiB", 512000: "500KiB", 1e9: "1GB", 3e6: "3MB", 1536: "1536"} {
		if got := s.String(); got != want {
			t.Errorf("%d: got %q, want %q", s, got, want)
		}
		back, err := ParseSize(s.String())
		if err != nil || Size(back) != s {
			t.Errorf("%d: round trip gave %d, %v", s, back, err)
		}
	}
}

// Size and Duration also work with BurntSushi/toml directly.
func TestWithTOMLPackage(t *testing.T) {
	var v struct {
		A, B Size
		D    Duration
	}
	if _, err := toml.Decode("A = 1048576\nB = \"1MiB\"\nD = \"1d\"", &v); err != nil {
		t.Fatal(err)
	}
	if v.A != 1<<20 || v.B != 1<<20 || v.D.D() != 24*time.Hour {
		t.Errorf("got %+v", v)
	}
	if _, err := toml.Decode("A = 1.5", &v); err == nil {
		t.Error("float size accepted")
	}
	var b strings.Builder
	if err := toml.NewEncoder(&b).Encode(v); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `D = "1d"`) || !strings.Contains(b.String(), `A = "1MiB"`) {
		t.Errorf("encoded:\n%s", b.String())
	}
}

func TestPosIndex(t *testing.T) {
	text := `# comment [not.a.table]
hostname = "h" # x = 1
s = """
fake = 1
"""
[smtp]
client_networks = [
  "a", # [queue]
  "b",
]
"quoted key" = 1
a.b.c = 'x'

[[domain]]
name = "one"
[[domain]]
name = "two"
inline = { k = 1, n = { m = [1, 2] } }
arr = [{ x = 1 }, { x = 2 }]
[domain.aliases]
sales = ["x"]
"in fo" = ["y"]
[[domain.sub]]
[[domain.sub]]
z = 3
[ queue ]
workers=1
`
	pos := buildPosIndex(text)
	want := map[string]int{
		"hostname": 2, "s": 3, "smtp": 6, "smtp.client_networks": 7,
		"smtp.client_networks[0]": 8, "smtp.client_networks[1]": 9,
		`smtp."quoted key"`: 11, "smtp.a": 12, "smtp.a.b.c": 12,
		"domain": 14, "domain[0]": 14, "domain[0].name": 15, "domain[1]": 16, "domain[1].name": 17,
		"domain[1].inline.k": 18, "domain[1].inline.n.m[1]": 18,
		"domain[1].arr[1].x": 19, "domain[1].aliases": 20, "domain[1].aliases.sales": 21,
		`domain[1].aliases."in fo"`: 22, "domain[1].sub[0]": 23, "domain[1].sub[1].z": 25,
		"queue": 26, "queue.workers": 27,
	}
	for k, l := range want {
		if pos[k] != l {
			t.Errorf("%s: line %d, want %d", k, pos[k], l)
		}
	}
	for _, k := range []string{"fake", "queue.x", "smtp.client_networks[2]"} {
		if pos.has(k) {
			t.Errorf("%s noted", k)
		}
	}
	if l := pos.line("domain[1].aliases.nope"); l != 20 {
		t.Errorf("parent fallback: %d", l)
	}
	for in, want := range map[string]string{
		"a.b": "a", "a": "", `a."b.c"`: "a", `a."b.c".d`: `a."b.c"`, "d[1]": "d", "d[1].x": "d[1]",
	} {
		if got := parentKey(in); got != want {
			t.Errorf("parentKey(%q) = %q, want %q", in, got, want)
		}
	}
}
