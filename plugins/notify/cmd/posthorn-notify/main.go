// Command posthorn-notify is the Posthorn notification plugin: templated
// notification mails (German and English) and signed webhooks for events.
// The MTA starts it; see plugins/notify/README.md.
package main

import (
	_ "time/tzdata" // the events' time_zone works without the system's zoneinfo

	"github.com/posthorn/posthorn/plugins/notify"
	"github.com/posthorn/posthorn/sdk"
)

func main() { sdk.Serve(&notify.Plugin{}) }
