package tlsrpt

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"time"
)

// ResultType is a TLS-RPT result type (RFC 8460 section 4.3.2).
type ResultType string

// Result types of RFC 8460 section 4.3.2.
const (
	// Negotiation failures (section 4.3.2.1).
	StartTLSNotSupported    ResultType = "starttls-not-supported"
	CertificateHostMismatch ResultType = "certificate-host-mismatch"
	CertificateExpired      ResultType = "certificate-expired"
	CertificateNotTrusted   ResultType = "certificate-not-trusted"
	ValidationFailure       ResultType = "validation-failure"
	// Policy failures, DANE (section 4.3.2.2).
	TLSAInvalid   ResultType = "tlsa-invalid"
	DNSSECInvalid ResultType = "dnssec-invalid"
	DANERequired  ResultType = "dane-required"
	// Policy failures, MTA-STS (section 4.3.2.2).
	STSPolicyFetchError ResultType = "sts-policy-fetch-error"
	STSPolicyInvalid    ResultType = "sts-policy-invalid"
	STSWebPKIInvalid    ResultType = "sts-webpki-invalid"
)

// ResultTypes lists every result type.
var ResultTypes = []ResultType{StartTLSNotSupported, CertificateHostMismatch, CertificateExpired,
	CertificateNotTrusted, ValidationFailure, TLSAInvalid, DNSSECInvalid, DANERequired,
	STSPolicyFetchError, STSPolicyInvalid, STSWebPKIInvalid}

// PolicyType is the kind of policy a session was evaluated against (RFC
// 8460 section 4.3.1).
type PolicyType string

const (
	PolicySTS  PolicyType = "sts"
	PolicyTLSA PolicyType = "tlsa"
	PolicyNone PolicyType = "no-policy-found"
)

// Report is an aggregate report, RFC 8460 section 4.4; the JSON field
// names are the RFC's.
type Report struct {
	OrganizationName string         `json:"organization-name"`
	DateRange        DateRange      `json:"date-range"`
	ContactInfo      string         `json:"contact-info"`
	ReportID         string         `json:"report-id"`
	Policies         []PolicyResult `json:"policies"`

	// Domain is the report domain (whose rua receives the report),
	// Submitter our host name, From the address mailed reports come
	// from. Not part of the JSON.
	Domain    string `json:"-"`
	Submitter string `json:"-"`
	From      string `json:"-"`
}

// DateRange is the report's period, RFC 3339 in UTC.
type DateRange struct {
	Start time.Time `json:"start-datetime"`
	End   time.Time `json:"end-datetime"`
}

// PolicyResult is the result for one policy.
type PolicyResult struct {
	Policy         PolicyDesc      `json:"policy"`
	Summary        Summary         `json:"summary"`
	FailureDetails []FailureDetail `json:"failure-details,omitempty"`
}

// PolicyDesc describes the policy applied (RFC 8460 section 4.3.1).
type PolicyDesc struct {
	PolicyType   PolicyType `json:"policy-type"`
	PolicyString []string   `json:"policy-string,omitempty"`
	PolicyDomain string     `json:"policy-domain"`
	MXHost       []string   `json:"mx-host,omitempty"`
}

// Summary counts sessions.
type Summary struct {
	TotalSuccessful int64 `json:"total-successful-session-count"`
	TotalFailure    int64 `json:"total-failure-session-count"`
}

// FailureDetail groups failed sessions with the same particulars.
type FailureDetail struct {
	ResultType            ResultType `json:"result-type"`
	SendingMTAIP          string     `json:"sending-mta-ip,omitempty"`
	ReceivingMXHostname   string     `json:"receiving-mx-hostname,omitempty"`
	ReceivingMXHelo       string     `json:"receiving-mx-helo,omitempty"`
	ReceivingIP           string     `json:"receiving-ip,omitempty"`
	FailedSessionCount    int64      `json:"failed-session-count"`
	AdditionalInformation string     `json:"additional-information,omitempty"`
	FailureReasonCode     string     `json:"failure-reason-code,omitempty"`
}

// JSON returns the report as RFC 8460 JSON.
func (r *Report) JSON() ([]byte, error) {
	return json.MarshalIndent(r, "", "  ")
}

// Gzip returns the report's JSON, gzip-compressed (RFC 8460 section 5:
// the application/tlsrpt+gzip form).
func (r *Report) Gzip() ([]byte, error) {
	js, err := r.JSON()
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(js)
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Gzip is r.Gzip().
func Gzip(r *Report) ([]byte, error) { return r.Gzip() }
