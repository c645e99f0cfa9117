package chunk

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
)

// GRPCPool is the buffer pool of every gRPC server and client of the
// plugin protocol (sdk.GRPCServerOptions, hostside.Dial): gRPC marshals
// each message it sends and gathers each message it receives into a
// buffer from it.
//
// gRPC's default pool has tiers of 32 KiB and then 1 MiB, and clears the
// whole buffer on every Get: a body chunk of 100 KB was gathered into a
// freshly cleared 1 MiB buffer four times per Transform (host send, plugin
// receive, plugin send, host receive), and every pooled buffer of the
// daemon stayed resident at 1 MiB (issue 19.4). This pool has a tier at
// every power of two from 256 bytes to 4 MiB and does not clear: gRPC
// writes every byte of a buffer it gets before reading it (it marshals
// into it or reads the message into it), the way its own dirty pools
// (ALTS, the HTTP/2 framer) are used. Larger buffers are not pooled.
var GRPCPool mem.BufferPool = newPool()

const (
	minShift = 8  // 256 B
	maxShift = 22 // 4 MiB: a Max chunk and its framing fit
)

type pool struct {
	tiers [maxShift - minShift + 1]sync.Pool
}

func newPool() *pool { return &pool{} }

// tier is the index of the smallest tier holding n bytes, -1 for none.
func tier(n int) int {
	if n <= 1<<minShift {
		return 0
	}
	s := bits.Len(uint(n - 1))
	if s > maxShift {
		return -1
	}
	return s - minShift
}

func (p *pool) Get(n int) *[]byte {
	t := tier(n)
	if t < 0 {
		b := make([]byte, n)
		return &b
	}
	if bp, ok := p.tiers[t].Get().(*[]byte); ok {
		*bp = (*bp)[:n]
		return bp
	}
	b := make([]byte, n, 1<<(t+minShift))
	return &b
}

func (p *pool) Put(bp *[]byte) {
	c := cap(*bp)
	// Only buffers of exactly a tier's size go back: Get relies on a
	// tier's buffers having its capacity.
	if c < 1<<minShift || c > 1<<maxShift || c&(c-1) != 0 {
		return
	}
	p.tiers[bits.Len(uint(c))-1-minShift].Put(bp)
}
