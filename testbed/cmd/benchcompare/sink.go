package main

import (
	"bufio"
	"bytes"
	"net"
	"strings"
	"sync/atomic"
)

// sink is a minimal SMTP server that accepts everything and counts the
// recipients of completed transactions (the MTAs under test relay to
// it). It stands in for Postfix's smtp-sink but can be asked how much
// has arrived.
type sink struct {
	ln    net.Listener
	rcpts atomic.Int64
	// sealed counts messages with an "application/pkcs7-mime" line
	// (S/MIME encrypted; benchcompare -smime checks every one is).
	sealed atomic.Int64
}

func startSink() (*sink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &sink{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s, nil
}

var pkcs7 = []byte("application/pkcs7-mime")

func (s *sink) addr() string { return s.ln.Addr().String() }
func (s *sink) close()       { s.ln.Close() }

func (s *sink) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 64<<10)
	w := bufio.NewWriter(c)
	reply := func(line string) bool {
		w.WriteString(line + "\r\n")
		// Pipelining: flush only when nothing more is buffered.
		if r.Buffered() == 0 {
			return w.Flush() == nil
		}
		return true
	}
	if !reply("220 sink ESMTP") {
		return
	}
	var n int64
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(string(line[:min(4, len(line))]))
		switch cmd {
		case "EHLO":
			w.WriteString("250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n")
			if !reply("250 SIZE 0") {
				return
			}
		case "HELO", "NOOP":
			reply("250 ok")
		case "MAIL":
			n = 0
			reply("250 ok")
		case "RCPT":
			n++
			reply("250 ok")
		case "RSET":
			n = 0
			reply("250 ok")
		case "DATA":
			if !reply("354 go") {
				return
			}
			midLine, isSealed := false, false
			for {
				l, err := r.ReadSlice('\n')
				if err == bufio.ErrBufferFull {
					midLine = true
					continue
				}
				if err != nil {
					return
				}
				if !midLine && len(l) == 3 && l[0] == '.' && l[1] == '\r' {
					break
				}
				if !isSealed && !midLine && bytes.Contains(l, pkcs7) {
					isSealed = true
				}
				midLine = false
			}
			if isSealed {
				s.sealed.Add(1)
			}
			s.rcpts.Add(n)
			n = 0
			reply("250 ok")
		case "QUIT":
			reply("221 bye")
			w.Flush()
			return
		default:
			reply("502 no")
		}
	}
}
