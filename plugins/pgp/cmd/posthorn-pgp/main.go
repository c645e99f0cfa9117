// Command posthorn-pgp is the Posthorn OpenPGP plugin. Started by the MTA
// (go-plugin sets its magic cookie in the environment) it serves the
// plugin protocol; started by an operator with arguments it manages the
// key store: posthorn-pgp keys generate|import|list|show|remove|export.
// See plugins/pgp/README.md.
package main

import (
	"os"

	"github.com/posthorn/posthorn/plugins/pgp"
	"github.com/posthorn/posthorn/sdk"
)

func main() {
	if os.Getenv(sdk.Handshake.MagicCookieKey) != sdk.Handshake.MagicCookieValue && len(os.Args) > 1 {
		os.Exit(pgp.RunCLI(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	sdk.Serve(&pgp.Plugin{})
}
