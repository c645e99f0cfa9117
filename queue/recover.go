package queue

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// recover loads the spool: it empties tmp/, replays every journal in msg/,
// cuts off torn journal tails, finishes removals that a crash interrupted,
// discards bodies without a journal and quarantines whatever cannot be read.
func (q *Queue) recover() error {
	tmps, err := os.ReadDir(q.tmpDir)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	for _, t := range tmps {
		// Never acknowledged: Enqueue returns only after the rename.
		if err := os.RemoveAll(filepath.Join(q.tmpDir, t.Name())); err != nil {
			return fmt.Errorf("queue: %w", err)
		}
		q.log.Info("removed leftover temporary file", "file", t.Name())
	}

	ents, err := os.ReadDir(q.msgDir)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	envs := map[string]bool{}
	bodies := map[string]bool{}
	var strays []string
	for _, de := range ents {
		name := de.Name()
		id, ext, _ := strings.Cut(name, ".")
		switch {
		case !de.Type().IsRegular() || !validID(id):
			strays = append(strays, name)
		case ext == "env":
			envs[id] = true
		case ext == "body":
			bodies[id] = true
		default:
			strays = append(strays, name)
		}
	}
	changed := false
	for _, name := range strays {
		q.quarantine(name, "unexpected file in spool")
		changed = true
	}
	for id := range bodies {
		if !envs[id] {
			// The journal is renamed into place after the body and
			// removed before it, so this message was never acknowledged
			// or was already finished.
			q.log.Info("removed body without envelope", "queue_id", id)
			if err := os.Remove(q.bodyPath(id)); err != nil {
				return fmt.Errorf("queue: %w", err)
			}
			changed = true
		}
	}
	loaded, removed := 0, 0
	for id := range envs {
		switch q.load(id, bodies[id]) {
		case loadOK:
			loaded++
		case loadRemoved:
			removed++
			changed = true
		case loadQuarantined:
			changed = true
		}
	}
	if changed {
		if err := syncDir(q.msgDir); err != nil {
			return fmt.Errorf("queue: %w", err)
		}
		if err := syncDir(q.qDir); err != nil {
			return fmt.Errorf("queue: %w", err)
		}
	}
	if loaded > 0 || removed > 0 {
		q.log.Info("queue recovered", "messages", loaded, "finished", removed)
	}
	return nil
}

type loadResult int

const (
	loadOK loadResult = iota
	loadRemoved
	loadQuarantined
)

func (q *Queue) load(id string, hasBody bool) loadResult {
	envFile, bodyFile := id+".env", id+".body"
	quarantine := func(reason string) loadResult {
		q.quarantine(envFile, reason)
		if hasBody {
			q.quarantine(bodyFile, reason)
		}
		return loadQuarantined
	}
	data, err := os.ReadFile(q.envPath(id))
	if err != nil {
		return quarantine(err.Error())
	}
	j, err := decodeJournal(data)
	if err != nil {
		return quarantine(err.Error())
	}
	if j.env.ID != id {
		return quarantine(fmt.Sprintf("envelope names message %q", j.env.ID))
	}
	if j.deleted || finished(j.env) {
		os.Remove(q.envPath(id))
		os.Remove(q.bodyPath(id))
		return loadRemoved
	}
	if !hasBody {
		return quarantine("message body missing")
	}
	st, err := os.Stat(q.bodyPath(id))
	if err != nil {
		return quarantine(err.Error())
	}
	if st.Size() != j.env.Size {
		return quarantine(fmt.Sprintf("body is %d bytes, envelope says %d", st.Size(), j.env.Size))
	}
	if j.valid < len(data) {
		// A torn last record: cut it off so later appends are readable.
		q.log.Warn("ignored torn journal record", "queue_id", id, "bytes", len(data)-j.valid)
		if err := truncateSync(q.envPath(id), int64(j.valid)); err != nil {
			return quarantine("cannot truncate torn journal: " + err.Error())
		}
	}
	j.env.Recovered = true
	e := &entry{env: j.env, nrec: j.nrec, hidx: -1}
	q.msgs[id] = e
	q.schedule(e)
	return loadOK
}

func finished(env *Envelope) bool {
	for _, r := range env.Recipients {
		if r.State == Pending {
			return false
		}
	}
	return true
}

// quarantine moves msg/name to quarantine/, never overwriting anything there.
func (q *Queue) quarantine(name, reason string) {
	dst := filepath.Join(q.qDir, name)
	if _, err := os.Lstat(dst); err == nil {
		dst = fmt.Sprintf("%s.%d", dst, time.Now().UnixNano())
	}
	err := os.Rename(filepath.Join(q.msgDir, name), dst)
	if err != nil {
		q.log.Error("cannot quarantine queue file", "file", name, "reason", reason, "err", err)
		return
	}
	q.log.Warn("quarantined queue file", "file", name, "to", dst, "reason", reason)
}

func truncateSync(name string, size int64) error {
	f, err := os.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
