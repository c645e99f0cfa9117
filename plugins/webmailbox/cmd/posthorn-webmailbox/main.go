// Command posthorn-webmailbox is the Posthorn web-mailbox plugin. The MTA
// starts it; see plugins/webmailbox/README.md. Operators also run it by
// hand for TANs:
//
//	posthorn-webmailbox tan issue -data DIR [-config FILE.json] [-o letter.pdf] ADDR
//	posthorn-webmailbox pin show -data DIR ADDR   (a sender asks for the PIN again)
package main

import (
	"fmt"
	"os"
	_ "time/tzdata" // time_zone works without the system's zoneinfo

	"github.com/posthorn/posthorn/plugins/webmailbox"
	"github.com/posthorn/posthorn/sdk"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "tan" {
		if err := webmailbox.TANCommand(os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "posthorn-webmailbox:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "pin" {
		if err := webmailbox.PINCommand(os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "posthorn-webmailbox:", err)
			os.Exit(1)
		}
		return
	}
	sdk.Serve(&webmailbox.Plugin{})
}
