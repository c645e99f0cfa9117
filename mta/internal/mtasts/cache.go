package mtasts

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// policyCache keeps policies across restarts: files on one node
// (diskCache), or the database the nodes share (sqlCache).
type policyCache interface {
	store(p *Policy) error
	remove(domain string)
	// loadAll returns every readable cached policy.
	loadAll(log *slog.Logger) []*Policy
	// lookup returns the cached policy of domain, nil if none; the disk
	// cache is read whole at start, so it has nothing more to say.
	lookup(domain string) (*Policy, error)
}

func (c *diskCache) lookup(string) (*Policy, error) { return nil, nil }

// diskCache keeps one JSON file per policy domain in a directory. Files
// are written atomically (temporary file, fsync, rename, fsync of the
// directory), so a crash leaves the old or the new policy, never half
// of one. On load the policy text is parsed again, so a file that was
// tampered with or written by an older, laxer version is dropped.
type diskCache struct {
	dir string
}

// cacheFile is the JSON form of a cached policy.
type cacheFile struct {
	Domain    string    `json:"domain"`
	ID        string    `json:"id"`
	FetchedAt time.Time `json:"fetched_at"`
	Policy    string    `json:"policy"`
}

func openCache(dir string) (*diskCache, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("mtasts: cache directory: %w", err)
	}
	return &diskCache{dir: dir}, nil
}

func (c *diskCache) path(domain string) string {
	// Domains are checked by normDomain: LDH and dots only.
	return filepath.Join(c.dir, domain+".json")
}

func (c *diskCache) store(p *Policy) error {
	data, err := json.MarshalIndent(cacheFile{Domain: p.Domain, ID: p.ID, FetchedAt: p.FetchedAt.UTC(), Policy: p.Text}, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(c.dir, ".tmp-"+p.Domain+"-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(append(data, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), c.path(p.Domain))
	}
	if err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if d, err := os.Open(c.dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func (c *diskCache) remove(domain string) {
	os.Remove(c.path(domain))
}

// load reads one file; any problem is an error.
func (c *diskCache) load(name string) (*Policy, error) {
	data, err := os.ReadFile(filepath.Join(c.dir, name))
	if err != nil {
		return nil, err
	}
	var cf cacheFile
	if err := json.Unmarshal(data, &cf); err != nil {
		return nil, err
	}
	d, err := normDomain(cf.Domain)
	if err != nil || d+".json" != name {
		return nil, errors.New("domain does not match the file name")
	}
	if cf.ID == "" || cf.FetchedAt.IsZero() {
		return nil, errors.New("no id or fetch time")
	}
	p, err := ParsePolicy([]byte(cf.Policy))
	if err != nil {
		return nil, err
	}
	p.Domain, p.ID, p.FetchedAt = d, cf.ID, cf.FetchedAt
	return p, nil
}

// loadAll returns every readable cached policy; unreadable files and
// left-over temporary files are removed.
func (c *diskCache) loadAll(log *slog.Logger) []*Policy {
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		log.Warn("MTA-STS cache unreadable", "dir", c.dir, "err", err)
		return nil
	}
	var out []*Policy
	for _, e := range ents {
		name := e.Name()
		if !e.Type().IsRegular() {
			continue
		}
		if strings.HasPrefix(name, ".tmp-") {
			os.Remove(filepath.Join(c.dir, name))
			continue
		}
		if !strings.HasSuffix(name, ".json") {
			continue
		}
		p, err := c.load(name)
		if err != nil {
			log.Warn("MTA-STS cache file dropped", "file", name, "err", err)
			os.Remove(filepath.Join(c.dir, name))
			continue
		}
		out = append(out, p)
	}
	return out
}
