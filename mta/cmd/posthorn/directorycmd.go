package main

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/posthorn/posthorn/conf"
	"github.com/posthorn/posthorn/mta/internal/adminapi"
	"github.com/posthorn/posthorn/mta/internal/control"
	"github.com/posthorn/posthorn/mta/internal/daemon"
	"github.com/posthorn/posthorn/mta/internal/directory"
)

const directoryUsage = `usage: posthorn directory [-c FILE] COMMAND   (over the control socket)
  domains                                  list local domains
  domain add DOMAIN [catch_all=LOCAL] [lmtp=DEST]
  domain del DOMAIN                        delete a domain and its addresses
  list DOMAIN [after=ADDRESS] [limit=N]    a domain's mailboxes and aliases
  show ADDRESS                             one mailbox or alias
  mailbox add ADDRESS [--password-stdin]   create a mailbox (password: first line of stdin)
  alias set ADDRESS TARGET...              create or change an alias
  del ADDRESS                              delete a mailbox or alias
  secure-alias ADDRESS on [LEVEL]|off      switch a user's secure alias (LEVEL: encrypt, dane-only, verify)
add --json for JSON output.
`

// directoryMain is `posthorn directory …`: the admin API's directory
// operations over the control socket.
func directoryMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("directory", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var pos []string
	asJSON, pwStdin := false, false
	for _, a := range fs.Args() {
		switch a {
		case "--json", "-json":
			asJSON = true
		case "--password-stdin", "-password-stdin":
			pwStdin = true
		default:
			pos = append(pos, a)
		}
	}
	usage := func() int { fmt.Fprint(stderr, directoryUsage); return 2 }
	if len(pos) == 0 {
		return usage()
	}
	kv := func(list []string) (map[string]string, bool) {
		m := map[string]string{}
		for _, a := range list {
			k, v, ok := strings.Cut(a, "=")
			if !ok {
				return nil, false
			}
			m[k] = v
		}
		return m, true
	}
	var op adminapi.Op
	switch {
	case pos[0] == "domains" && len(pos) == 1:
		op.Op = "domains"
	case pos[0] == "domain" && len(pos) >= 3 && pos[1] == "add":
		m, ok := kv(pos[3:])
		if !ok {
			return usage()
		}
		op = adminapi.Op{Op: "put-domain", Domain: pos[2], CatchAll: m["catch_all"], LMTP: m["lmtp"]}
	case pos[0] == "domain" && len(pos) == 3 && pos[1] == "del":
		op = adminapi.Op{Op: "delete-domain", Domain: pos[2]}
	case pos[0] == "list" && len(pos) >= 2:
		m, ok := kv(pos[2:])
		if !ok {
			return usage()
		}
		op = adminapi.Op{Op: "list", Domain: pos[1], After: m["after"]}
		if l := m["limit"]; l != "" {
			n, err := strconv.Atoi(l)
			if err != nil {
				return usage()
			}
			op.Limit = n
		}
	case pos[0] == "show" && len(pos) == 2:
		op = adminapi.Op{Op: "show", Address: pos[1]}
	case pos[0] == "mailbox" && len(pos) == 3 && pos[1] == "add":
		op = adminapi.Op{Op: "put-mailbox", Address: pos[2]}
		if pwStdin {
			line, err := bufio.NewReader(stdin).ReadString('\n')
			if err != nil && line == "" {
				fmt.Fprintln(stderr, "posthorn: no password on stdin")
				return 1
			}
			op.Password = strings.TrimRight(line, "\r\n")
		}
	case pos[0] == "alias" && len(pos) >= 4 && pos[1] == "set":
		op = adminapi.Op{Op: "put-alias", Address: pos[2], Targets: pos[3:]}
	case pos[0] == "del" && len(pos) == 2:
		op = adminapi.Op{Op: "delete-address", Address: pos[1]}
	case pos[0] == "secure-alias" && len(pos) >= 3 && (pos[2] == "on" || pos[2] == "off"):
		op = adminapi.Op{Op: "secure-alias", Address: pos[1], Enabled: pos[2] == "on"}
		if len(pos) == 4 && pos[2] == "on" {
			op.Level = pos[3]
		} else if len(pos) != 3 {
			return usage()
		}
	default:
		return usage()
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "posthorn:", err)
		return 1
	}
	args2, _ := json.Marshal(op)
	resp, err := control.Call(cfg.Control.Socket, control.Request{Cmd: "directory", Args: args2})
	if err != nil {
		fmt.Fprintln(stderr, "posthorn:", err)
		return 1
	}
	if asJSON {
		if len(resp.Data) == 0 || string(resp.Data) == "null" {
			fmt.Fprintln(stdout, "{}")
			return 0
		}
		var v any
		json.Unmarshal(resp.Data, &v)
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(v)
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	switch op.Op {
	case "domains":
		var ds []directory.Domain
		json.Unmarshal(resp.Data, &ds)
		for _, d := range ds {
			fmt.Fprintf(tw, "%s\tcatch_all=%s\tlmtp=%s\n", d.Name, d.CatchAll, d.LMTP)
		}
	case "list":
		var as []directory.Address
		json.Unmarshal(resp.Data, &as)
		for _, a := range as {
			printAddress(tw, a)
		}
	case "show", "put-mailbox", "put-alias", "secure-alias":
		var a directory.Address
		json.Unmarshal(resp.Data, &a)
		printAddress(tw, a)
	default:
		fmt.Fprintln(tw, "ok")
	}
	return 0
}

func printAddress(w io.Writer, a directory.Address) {
	if !a.Mailbox {
		fmt.Fprintf(w, "%s\talias\t%s\n", a.Addr, strings.Join(a.Targets, ", "))
		return
	}
	sec := "secure alias off"
	if a.SecureAlias {
		level := a.SecureLevel
		if level == "" {
			level = "default level"
		}
		sec = "secure alias on (" + level + ")"
	}
	fmt.Fprintf(w, "%s\tmailbox\t%s\n", a.Addr, sec)
}

// preflightMain is `posthorn explain --from A --to B [--to C]`: the admin
// API's preflight over the control socket.
func preflightMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs)
	from := fs.String("from", "", "envelope sender")
	var to multiFlag
	fs.Var(&to, "to", "recipient (repeat for several)")
	asJSON := fs.Bool("json", false, "JSON output")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if len(to) == 0 {
		fmt.Fprintln(stderr, "usage: posthorn explain [-c FILE] --from ADDR --to ADDR [--to ADDR…] [--json]")
		return 2
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "posthorn:", err)
		return 1
	}
	a, _ := json.Marshal(map[string]any{"from": *from, "to": []string(to)})
	resp, err := control.Call(cfg.Control.Socket, control.Request{Cmd: "preflight", Args: a})
	if err != nil {
		fmt.Fprintln(stderr, "posthorn:", err)
		return 1
	}
	var res daemon.PreflightResult
	if err := json.Unmarshal(resp.Data, &res); err != nil {
		fmt.Fprintln(stderr, "posthorn: bad answer:", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(res)
		return 0
	}
	for _, r := range res.Recipients {
		fmt.Fprintf(stdout, "%s\n  route:      %s\n", r.Address, r.Route)
		if r.Error != "" {
			fmt.Fprintf(stdout, "  problem:    %s\n", r.Error)
		}
		if r.TLSLevel != "" {
			fmt.Fprintf(stdout, "  TLS level:  %s (from %s)\n", r.TLSLevel, r.TLSSource)
			for _, why := range r.TLSReasons {
				fmt.Fprintf(stdout, "              %s\n", why)
			}
		}
		fmt.Fprintf(stdout, "  encryption: %s (%s)\n", r.Encryption, r.EncryptionReason)
	}
	return 0
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

// adminMain is `posthorn admin token NAME`: a new admin API token and the
// [[admin.token]] table (with its digest) for posthorn.toml.
func adminMain(args []string, stdout, stderr io.Writer) int {
	if len(args) < 2 || args[0] != "token" {
		fmt.Fprintln(stderr, "usage: posthorn admin token NAME [SCOPE…]   (scopes: "+strings.Join(adminScopes(), ", ")+"; default all)")
		return 2
	}
	name, scopes := args[1], args[2:]
	if len(scopes) == 0 {
		scopes = []string{"*"}
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		fmt.Fprintln(stderr, "posthorn:", err)
		return 1
	}
	tok := base64.RawURLEncoding.EncodeToString(raw)
	sum := sha256.Sum256([]byte(tok))
	q := make([]string, len(scopes))
	for i, s := range scopes {
		q[i] = strconv.Quote(s)
	}
	fmt.Fprintf(stdout, "token (give it to the client; it is not stored anywhere):\n  %s\n\nadd to posthorn.toml:\n[[admin.token]]\nname = %q\nsha256 = %q\nscopes = [%s]\n",
		tok, name, hex.EncodeToString(sum[:]), strings.Join(q, ", "))
	return 0
}

func adminScopes() []string { return conf.AdminScopes }
