// Package dnsserver is a programmable DNS server for tests and demos: it
// listens on 127.0.0.1 (UDP and TCP on the same free port) and serves zones
// whose records can be changed while it runs.
//
// It speaks DNS as in RFC 1034/1035 (NXDOMAIN vs NODATA with the zone SOA in
// the authority section, CNAME chasing, truncation of UDP answers with TC=1
// so that clients retry over TCP per RFC 7766), answers MX including the null
// MX of RFC 7505, and TLSA records (RFC 6698/7672). Zones in Secure mode
// answer with the AD bit (RFC 4035 section 3.2.3) without signing anything —
// the server plays the part of a local validating resolver; Bogus zones
// answer SERVFAIL as a validating resolver does when validation fails.
package dnsserver
