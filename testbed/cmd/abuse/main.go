// Command abuse is `make bench-abuse`: it runs the AUTH flood and the
// slow-client flood of issue 20 (testbed/abuse) against a real posthorn
// and prints the daemon's RSS, the real user's login latency and the
// session counts.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/posthorn/posthorn/testbed/abuse"
)

func main() {
	var c abuse.Config
	flag.StringVar(&c.Bin, "posthorn", "bin/posthorn", "posthorn binary")
	flag.IntVar(&c.Guessers, "guessers", 100, "parallel AUTH guessers")
	flag.IntVar(&c.Sources, "sources", 5, "addresses the guessers come from")
	flag.IntVar(&c.Slow, "slow", 200, "slow clients")
	flag.IntVar(&c.Logins, "logins", 5, "logins by the real user during the AUTH flood")
	flag.DurationVar(&c.Duration, "d", 20*time.Second, "duration of each flood")
	asJSON := flag.Bool("json", false, "print the result as JSON (for testbed/abuse's test)")
	flag.Parse()
	res, err := abuse.Run(context.Background(), c)
	if res != nil {
		if *asJSON {
			json.NewEncoder(os.Stdout).Encode(res)
		} else {
			res.Print(os.Stdout, c)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-abuse:", err)
		os.Exit(1)
	}
}
