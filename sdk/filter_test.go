package sdk

import (
	"strings"
	"testing"
)

func TestInboundFilterMatch(t *testing.T) {
	local := func(d string) bool { return d == "org.example" }
	smime := &InboundFilter{Rules: []InboundMatch{
		{ContentTypes: []string{"application/pkcs7-mime", "multipart/signed"}},
		{Headers: []string{"X-Posthorn-SMIME"}},
		{Recipients: []string{"certs@org.example"}},
	}}
	localOnly := &InboundFilter{Rules: []InboundMatch{{ContentTypes: []string{"multipart/*"}, LocalRecipient: true}}}
	byDomain := &InboundFilter{Rules: []InboundMatch{{Recipients: []string{"Partner.Example"}}}}
	tests := []struct {
		name   string
		f      *InboundFilter
		header string
		rcpts  []string
		want   bool
	}{
		{"nil filter sees everything", nil, "Subject: x\r\n", []string{"a@b.example"}, true},
		{"no rules sees everything", &InboundFilter{}, "Subject: x\r\n", nil, true},
		{"enveloped", smime, "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n", []string{"a@org.example"}, true},
		{"case and parameters", smime, "content-type: Multipart/Signed; protocol=\"application/pkcs7-signature\"; boundary=x\r\n", nil, true},
		{"plain text", smime, "Content-Type: text/plain\r\nSubject: hi\r\n", []string{"a@org.example"}, false},
		{"no content type is text/plain", smime, "Subject: hi\r\n", []string{"a@org.example"}, false},
		{"forged result header", smime, "x-posthorn-smime: decrypted\r\n", nil, true},
		{"collection address", smime, "Content-Type: multipart/mixed; boundary=b\r\n", []string{"x@y.example", "CERTS@org.example"}, true},
		{"wildcard subtype and local", localOnly, "Content-Type: multipart/encrypted; protocol=x\r\n", []string{"x@else.example", "bob@ORG.example"}, true},
		{"wildcard subtype, not local", localOnly, "Content-Type: multipart/encrypted\r\n", []string{"x@else.example"}, false},
		{"local, wrong type", localOnly, "Content-Type: text/html\r\n", []string{"bob@org.example"}, false},
		{"domain pattern", byDomain, "", []string{"bob@partner.example"}, true},
		{"domain pattern is not a subdomain", byDomain, "", []string{"bob@x.partner.example"}, false},
		{"broken parameters still name the type", smime, "Content-Type: application/pkcs7-mime; name=\"unterminated\r\n", nil, true},
	}
	for _, tt := range tests {
		in := ReadFilterInput(strings.NewReader(tt.header+"\r\nbody\r\n"), tt.rcpts, local)
		if got := tt.f.Match(in); got != tt.want {
			t.Errorf("%s: Match = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestInboundFilterValidate(t *testing.T) {
	good := &InboundFilter{Rules: []InboundMatch{{ContentTypes: []string{"application/pkcs7-mime", "multipart/*"},
		Headers: []string{"X-Spam"}, Recipients: []string{"a@b.example", "b.example"}, LocalRecipient: true}}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []InboundMatch{
		{ContentTypes: []string{"pkcs7"}},
		{ContentTypes: []string{"*/*"}},
		{ContentTypes: []string{""}},
		{Headers: []string{"X Spam"}},
		{Headers: []string{"X-Spam:"}},
		{Recipients: []string{""}},
		{Recipients: []string{"@b.example"}},
		{Recipients: []string{"<a@b.example>"}},
	} {
		if err := (&InboundFilter{Rules: []InboundMatch{bad}}).Validate(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
	d := Description{Name: "x", Version: "1.0.0", InboundFilter: &InboundFilter{Rules: []InboundMatch{{Headers: []string{"a b"}}}}}
	if d.Validate() == nil {
		t.Error("Description with a bad filter validates")
	}
}

func TestInboundFilterPB(t *testing.T) {
	f := &InboundFilter{Rules: []InboundMatch{{ContentTypes: []string{"a/b"}, LocalRecipient: true, Recipients: []string{"x@y"}, Headers: []string{"H"}}, {}}}
	g := inboundFilterFromPB(inboundFilterToPB(f))
	if len(g.Rules) != 2 || g.Rules[0].ContentTypes[0] != "a/b" || !g.Rules[0].LocalRecipient || g.Rules[0].Recipients[0] != "x@y" || g.Rules[0].Headers[0] != "H" {
		t.Fatalf("round trip: %+v", g)
	}
	if inboundFilterFromPB(nil) != nil || inboundFilterToPB(nil) != nil {
		t.Fatal("nil must stay nil")
	}
}
