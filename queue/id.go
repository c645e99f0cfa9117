package queue

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Digits in ASCII order, so that fixed-width base-62 strings sort like the
// numbers they encode.
const b62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

const (
	idTimeDigits = 9 // microseconds since 1970: 62^9 µs lasts until the year 2398
	idRandDigits = 7
	idLen        = idTimeDigits + idRandDigits
)

// idClock hands out strictly increasing microsecond stamps, so IDs made by
// one process are unique and sort by creation even if the clock steps back.
type idClock struct {
	mu   sync.Mutex
	last int64
}

func (c *idClock) next() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	us := time.Now().UnixMicro()
	if us <= c.last {
		us = c.last + 1
	}
	c.last = us
	return us
}

// newID is 9 base-62 digits of time and 7 random ones (against other
// processes and clock jumps across restarts).
func (c *idClock) newID() string {
	var b [idLen]byte
	us := c.next()
	for i := idTimeDigits - 1; i >= 0; i-- {
		b[i] = b62[us%62]
		us /= 62
	}
	for i := idTimeDigits; i < idLen; i++ {
		b[i] = b62[rand.IntN(62)]
	}
	return string(b[:])
}

// validID accepts what NewID makes and any other short [A-Za-z0-9] name;
// IDs become file names, so nothing else is allowed.
func validID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}
