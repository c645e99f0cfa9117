// Package freeport hands out loopback ports for tests that must tell a
// daemon (their own, or Postfix, nginx, Knot...) which port to bind: a
// port that was free when asked and never the same one twice in one
// process. The kernel hands a port just closed out again now and then, and
// two listeners of one test were then given the same port (bind: address
// already in use). The port stays free only as long as nobody else takes
// it; bind it soon.
package freeport

import (
	"net"
	"strconv"
	"sync"
	"testing"
)

var given = struct {
	sync.Mutex
	m map[string]bool
}{m: map[string]bool{}}

// Port returns a TCP port free on host (an IP address), also free for UDP
// when udp is set (a DNS server's port).
func Port(t testing.TB, host string, udp bool) int {
	t.Helper()
	for range 100 {
		p := try(t, host, udp)
		if p == 0 {
			continue
		}
		key := net.JoinHostPort(host, strconv.Itoa(p))
		given.Lock()
		dup := given.m[key]
		given.m[key] = true
		given.Unlock()
		if !dup {
			return p
		}
	}
	t.Fatalf("freeport: no free port on %s", host)
	return 0
}

// Addr returns "host:port" with a TCP port free on host.
func Addr(t testing.TB, host string) string {
	t.Helper()
	return net.JoinHostPort(host, strconv.Itoa(Port(t, host, false)))
}

// try returns a port free on host just now, 0 if it is taken for UDP.
func try(t testing.TB, host string, udp bool) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("freeport: %v", err)
	}
	defer l.Close()
	p := l.Addr().(*net.TCPAddr).Port
	if udp {
		u, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err != nil {
			return 0
		}
		u.Close()
	}
	return p
}
