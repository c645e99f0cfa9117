package directory

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/posthorn/posthorn/conf"
)

// Open opens the directory the config asks for ([directory] kind) with its
// cache; users is the password file of the static kind. Start it to
// follow changes; Close it at the end.
func Open(ctx context.Context, cfg *conf.Config, users PasswordFile, userdb Userdb, log *slog.Logger) (*Directory, error) {
	var b Backend
	switch cfg.Directory.Kind {
	case "", "static":
		b = NewStatic(cfg, users)
	case "sqlite":
		s, err := OpenSQLite(ctx, cfg.Directory.Path)
		if err != nil {
			return nil, err
		}
		b = s
	case "postgres":
		s, err := OpenPostgres(ctx, cfg.Database)
		if err != nil {
			return nil, fmt.Errorf("directory: %w", err)
		}
		b = s
	default:
		return nil, fmt.Errorf("directory: unknown kind %q", cfg.Directory.Kind)
	}
	d, err := New(ctx, b, Options{
		Delimiter: cfg.Local.RecipientDelimiter,
		CacheSize: cfg.Directory.CacheSize,
		CacheTTL:  cfg.Directory.CacheTTL.D(),
		Userdb:    userdb,
		Logger:    log,
	})
	if err != nil {
		b.Close()
		return nil, err
	}
	return d, nil
}
