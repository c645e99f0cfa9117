package queue

import (
	"os"
	"sync"
)

// dirSyncer makes directory entries in one directory durable. With group
// commit, one goroutine runs fsync on the directory; every caller that
// asked while the previous fsync was running is served by the next single
// fsync. A caller's request is sent only after its rename or unlink
// returned, and the goroutine collects requests before it starts an fsync,
// so every fsync covers the changes of all callers it answers.
type dirSyncer struct {
	dir   *os.File
	group bool

	reqs chan chan error
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func newDirSyncer(dir string, group bool) (*dirSyncer, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	s := &dirSyncer{dir: f, group: group, reqs: make(chan chan error),
		stop: make(chan struct{}), done: make(chan struct{})}
	if group {
		go s.run()
	} else {
		close(s.done)
	}
	return s, nil
}

// sync returns once every change made to the directory before the call is
// durable.
func (s *dirSyncer) sync() error {
	if !s.group {
		select {
		case <-s.stop:
			return ErrClosed
		default:
		}
		return s.dir.Sync()
	}
	ch := make(chan error, 1)
	select {
	case s.reqs <- ch:
		return <-ch
	case <-s.stop:
		return ErrClosed
	}
}

func (s *dirSyncer) run() {
	defer close(s.done)
	var batch []chan error
	for {
		select {
		case ch := <-s.reqs:
			batch = append(batch[:0], ch)
		case <-s.stop:
			return
		}
	drain:
		for {
			select {
			case ch := <-s.reqs:
				batch = append(batch, ch)
			default:
				break drain
			}
		}
		err := s.dir.Sync()
		for _, ch := range batch {
			ch <- err
		}
	}
}

func (s *dirSyncer) close() error {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	return s.dir.Close()
}

// syncDir fsyncs a directory by name.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
