package webmailbox

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/posthorn/posthorn/sdk"
)

// PINFor returns the PIN of a mailbox that is waiting for activation, for
// the sender who asks for it again (mailbox.org's "show assigned PIN").
// A mailbox without a PIN, or already activated, has none to show.
func (sv *Service) PINFor(ctx context.Context, addr string) (string, error) {
	mb, err := sv.store.GetMailbox(ctx, normAddr(addr))
	if err != nil {
		return "", err
	}
	if mb == nil {
		return "", fmt.Errorf("no web mailbox for %s", addr)
	}
	if mb.State != StatePending {
		return "", fmt.Errorf("the web mailbox of %s is activated; its PIN is no longer needed", addr)
	}
	if mb.PINSealed == nil {
		return "", fmt.Errorf("the web mailbox of %s has no PIN", addr)
	}
	pin, err := aeadOpen(sv.master, mb.PINSealed, adPIN(mb.Address))
	if err != nil {
		return "", fmt.Errorf("the PIN of %s cannot be opened with this master key: %w", addr, err)
	}
	return string(pin), nil
}

// PINCommand is `posthorn-webmailbox pin show -data DIR ADDR`: the PIN of
// a mailbox not yet activated, for the helpdesk of a sender who lost it.
func PINCommand(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "show" {
		return errors.New("usage: posthorn-webmailbox pin show -data DIR [-database FILE] ADDR")
	}
	fs := flag.NewFlagSet("pin show", flag.ContinueOnError)
	dataDir := fs.String("data", "", "the plugin's data directory (holds webmailbox.db and master.key)")
	db := fs.String("database", "", "database file if not DATA/webmailbox.db")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 || *dataDir == "" {
		return errors.New("pin show: need -data and one address")
	}
	s := &settings{dbPath: filepath.Join(*dataDir, "webmailbox.db"), masterKeyPath: filepath.Join(*dataDir, "master.key"), kdf: DefaultKDF, defaultLang: "en"}
	if *db != "" {
		s.dbPath = *db
	}
	if _, err := os.Stat(s.masterKeyPath); err != nil {
		return fmt.Errorf("pin show: %s: %w (is -data the plugin's data directory?)", s.masterKeyPath, err)
	}
	if dsn := os.Getenv(sdk.DatabaseEnv); dsn != "" {
		s.shared = &sdk.Database{DSN: dsn, MaxConns: 2}
	}
	sv, err := newService(context.Background(), s, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
	}
	defer sv.Close()
	pin, err := sv.PINFor(context.Background(), fs.Arg(0))
	if err != nil {
		return fmt.Errorf("pin show: %w", err)
	}
	_, err = fmt.Fprintln(stdout, pin)
	return err
}
