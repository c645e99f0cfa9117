// Command posthorn-smime is the Posthorn S/MIME plugin (see
// plugins/smime/README.md). Started by the MTA — go-plugin's magic cookie
// POSTHORN_PLUGIN is in the environment — it serves the plugin; started
// with arguments from a shell it is the certificate store's command line:
// posthorn-smime certs import|list|show|remove|export.
package main

import (
	"os"

	"github.com/posthorn/posthorn/plugins/smime"
	"github.com/posthorn/posthorn/sdk"
)

func main() {
	if os.Getenv("POSTHORN_PLUGIN") == "" {
		os.Exit(smime.CLI(os.Args[1:], os.Stdout, os.Stderr))
	}
	sdk.Serve(&smime.Plugin{})
}
