// Package mta is the posthorn daemon: SMTP in (RFC 5321, 3207, 4954, 6152,
// 6531, 3030, 3461), routing, local and remote delivery with enforced TLS
// (RFC 7672 DANE, 8461 MTA-STS, 8689 REQUIRETLS, 8460 TLS-RPT), DSNs
// (RFC 3464), DKIM/SPF/DMARC, the plugin host and metrics.
//
// Almost all of it lives under mta/internal and is not meant for other
// programs. The public surface is deliberately small:
//
//   - mta/cmd/posthorn, the one binary operators run (serve, queue, tls,
//     sendmail, …);
//   - mta/server, which starts that same MTA inside another Go program;
//     the testbed's demo (testbed/cmd/demo) is its only user.
//
// Plugins never import anything under mta: they speak to the MTA through
// the plugin SDK (module github.com/posthorn/posthorn/sdk).
package mta
