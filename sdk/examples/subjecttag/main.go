// Command subjecttag is an example Posthorn plugin, small but real:
//
//   - Inbound: refuses mail containing one of the configured words
//     (550 5.7.1) and tags all other mail with a header.
//   - Outbound: for recipients in the configured domains, prefixes the
//     Subject with a tag and appends a footer to plain-text messages.
//   - Events: logs delivery events and its own "subjecttag.rejected" events,
//     which it emits through the host on every rejection.
//
// Every body is streamed: the plugin never holds a whole message in memory.
// See README.md.
package main

import "github.com/posthorn/posthorn/sdk"

func main() {
	sdk.Serve(&Plugin{})
}
