package directory

import (
	"container/list"
	"sync"
	"time"
)

// lru is a bounded map of lookups with an expiry each. Expired entries
// stay until evicted: while the backend is down, a stale answer is better
// than none.
type lru struct {
	mu    sync.Mutex
	max   int
	ttl   time.Duration
	ll    *list.List
	items map[string]*list.Element
	now   func() time.Time
}

type entry struct {
	key     string
	addr    *Address // nil: known not to exist
	expires time.Time
}

func newLRU(max int, ttl time.Duration, now func() time.Time) *lru {
	return &lru{max: max, ttl: ttl, ll: list.New(), items: map[string]*list.Element{}, now: now}
}

// get returns the entry for key and whether it is still fresh.
func (c *lru) get(key string) (e *entry, fresh bool) {
	if c.max <= 0 {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return nil, false
	}
	c.ll.MoveToFront(el)
	e = el.Value.(*entry)
	return e, c.now().Before(e.expires)
}

func (c *lru) put(key string, a *Address) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := &entry{key: key, addr: a, expires: c.now().Add(c.ttl)}
	if el, ok := c.items[key]; ok {
		el.Value = e
		c.ll.MoveToFront(el)
		return
	}
	c.items[key] = c.ll.PushFront(e)
	for c.ll.Len() > c.max {
		last := c.ll.Back()
		c.ll.Remove(last)
		delete(c.items, last.Value.(*entry).key)
	}
}

func (c *lru) remove(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.ll.Remove(el)
		delete(c.items, key)
	}
}

// expireAll makes every entry stale: looked up again when possible, still
// used when the backend is down.
func (c *lru) expireAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for el := c.ll.Front(); el != nil; el = el.Next() {
		e := *el.Value.(*entry)
		e.expires = time.Time{}
		el.Value = &e
	}
}

func (c *lru) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ll.Init()
	clear(c.items)
}

func (c *lru) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}
