// Package tlsrpt is SMTP TLS Reporting (RFC 8460) on the sending side: a
// Recorder that keeps the outcome of every outbound delivery attempt per
// report domain (success, or failure with an RFC 8460 section 4.3.2
// result type, with the policy applied: sts, tlsa or no-policy-found), in
// append-only daily files that survive restarts; the aggregate report in
// the JSON of RFC 8460 section 4.4 (field names exactly as there); the
// discovery of where reports go (the _smtp._tls.DOMAIN TXT record,
// section 3); and their delivery (section 5): by mail, a
// multipart/report; report-type="tlsrpt" with an application/tlsrpt+gzip
// attachment (section 5.3), handed to our own queue, or by HTTPS POST
// (section 5.4). DailyLoop sends yesterday's reports once a day.
//
// Choices: days are UTC days (00:00:00 to 23:59:59); the report-id is
// deterministic ("YYYYMMDD.DOMAIN@SUBMITTER"), so a report re-sent after
// a crash carries the same id; "mx-host" is a list of strings as in the
// RFC's example; "failure-reason-code" is spelled as in section 4.4 (the
// example in Appendix B says "failure-error-code"). Reports are not
// DKIM-signed here: the outbound path that carries our own mail signs
// them (section 5.3 requires it).
package tlsrpt
