package freeport

import (
	"net"
	"strconv"
	"testing"
)

// TestNeverTwice: 300 ports on one address, all different (the kernel
// alone repeats a few in 300 on a fresh address), and each is bindable
// for TCP, and for UDP when asked.
func TestNeverTwice(t *testing.T) {
	for _, udp := range []bool{false, true} {
		host := "127.31.41.59"
		if udp {
			host = "127.31.41.60"
		}
		seen := map[int]bool{}
		for range 300 {
			p := Port(t, host, udp)
			if seen[p] {
				t.Fatalf("port %d handed out twice", p)
			}
			seen[p] = true
		}
		for p := range seen {
			l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
			if err != nil {
				t.Fatalf("port %d: %v", p, err)
			}
			l.Close()
			break
		}
	}
	if a := Addr(t, "127.0.0.1"); a == "" {
		t.Fatal("no address")
	}
}
