package directory

import (
	"testing"
	"time"
)

func TestLRUBoundedAndStale(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newLRU(3, time.Minute, func() time.Time { return now })
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		c.put(k, &Address{Addr: k})
	}
	if c.len() != 3 {
		t.Fatalf("%d entries, bound is 3", c.len())
	}
	if e, _ := c.get("a"); e != nil {
		t.Error("oldest entry not evicted")
	}
	if e, fresh := c.get("e"); e == nil || !fresh {
		t.Error("newest entry missing or stale")
	}
	now = now.Add(2 * time.Minute)
	if e, fresh := c.get("e"); e == nil || fresh {
		t.Error("expired entry should be kept, stale")
	}
	c.put("e", nil)
	c.expireAll()
	if e, fresh := c.get("e"); e == nil || fresh || e.addr != nil {
		t.Error("expireAll lost the negative entry or left it fresh")
	}
	c.clear()
	if c.len() != 0 {
		t.Error("clear left entries")
	}
	off := newLRU(0, time.Minute, time.Now)
	off.put("x", &Address{})
	if e, _ := off.get("x"); e != nil {
		t.Error("size 0 caches")
	}
}
