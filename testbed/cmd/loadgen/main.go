// Command loadgen sends SMTP load to a server and prints throughput and
// latency figures (see package testbed/loadgen).
//
//	loadgen -addr 127.0.0.1:2525 -n 10000 -c 20 -size 10 -to sink@example.org
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"

	"github.com/posthorn/posthorn/testbed/loadgen"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:25", "SMTP server host:port")
	n := flag.Int("n", 1000, "messages in total")
	c := flag.Int("c", 10, "concurrent sessions")
	size := flag.Int("size", 10, "message size in KiB")
	to := flag.String("to", "sink@posthorn.test", "recipients, comma separated")
	from := flag.String("from", "loadgen@posthorn.test", "envelope sender")
	helo := flag.String("helo", "loadgen.posthorn.test", "EHLO name")
	useTLS := flag.Bool("tls", false, "use STARTTLS")
	caFile := flag.String("cafile", "", "with -tls: verify the server against this PEM CA file (default: no verification)")
	serverName := flag.String("servername", "", "with -tls and -cafile: name to verify (default: host of -addr)")
	ids := flag.Bool("ids", false, "also print the accepted Message-IDs")
	flag.Parse()

	cfg := loadgen.Config{Addr: *addr, N: *n, Concurrency: *c, SizeKB: *size, From: *from,
		To: strings.Split(*to, ","), Helo: *helo, STARTTLS: *useTLS}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			fatal(err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fatal(fmt.Errorf("%s: no certificates", *caFile))
		}
		cfg.TLSConfig = &tls.Config{RootCAs: pool, ServerName: *serverName}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := loadgen.Run(ctx, cfg)
	fmt.Printf("run:      %s\n", res.RunID)
	fmt.Printf("sent:     %d\n", res.Sent)
	fmt.Printf("failed:   %d\n", res.Failed)
	fmt.Printf("duration: %v\n", res.Duration)
	fmt.Printf("rate:     %.1f msg/s\n", res.Rate)
	fmt.Printf("latency:  p50 %v  p90 %v  p99 %v  max %v (end of DATA to reply)\n", res.P50, res.P90, res.P99, res.Max)
	for _, e := range res.Errors {
		fmt.Printf("error:    %s\n", e)
	}
	if *ids {
		for _, id := range res.MessageIDs {
			fmt.Println(id)
		}
	}
	if err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "loadgen:", err)
	os.Exit(1)
}
