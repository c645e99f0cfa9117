package webmailbox

import (
	"encoding/binary"
	"fmt"
	"net/mail"
	"strings"
	"time"
	"unicode/utf16"
)

// Outlook .msg (MS-OXMSG): MAPI properties in a compound file.

const (
	ptLong    = 0x0003
	ptBoolean = 0x000B
	ptSystime = 0x0040
	ptUnicode = 0x001F
	ptBinary  = 0x0102
)

type mapiProp struct {
	id, typ uint16
	fixed   uint64 // ptLong, ptBoolean, ptSystime
	data    []byte // ptUnicode (UTF-16LE, no terminator), ptBinary
}

func pStr(id uint16, s string) mapiProp {
	u := utf16.Encode([]rune(strings.ToValidUTF8(s, "\uFFFD")))
	b := make([]byte, len(u)*2)
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[i*2:], c)
	}
	return mapiProp{id: id, typ: ptUnicode, data: b}
}

func pBin(id uint16, b []byte) mapiProp { return mapiProp{id: id, typ: ptBinary, data: b} }
func pLong(id uint16, v uint32) mapiProp {
	return mapiProp{id: id, typ: ptLong, fixed: uint64(v)}
}

// pTime is a FILETIME: 100 ns since 1601-01-01 UTC.
func pTime(id uint16, t time.Time) mapiProp {
	const epochDiff = 116444736000000000
	return mapiProp{id: id, typ: ptSystime, fixed: uint64(t.UnixNano()/100 + epochDiff)}
}

// writeProps adds the property streams and the __properties_version1.0
// stream with a header of hdrLen bytes (32 top level, 8 recipients and
// attachments) whose bytes 8-23 are hdr.
func writeProps(st *cfbStorage, props []mapiProp, hdrLen int, hdr []uint32) {
	ps := make([]byte, hdrLen, hdrLen+16*len(props))
	for i, v := range hdr {
		binary.LittleEndian.PutUint32(ps[8+i*4:], v)
	}
	for _, p := range props {
		e := make([]byte, 16)
		binary.LittleEndian.PutUint32(e[0:], uint32(p.id)<<16|uint32(p.typ))
		binary.LittleEndian.PutUint32(e[4:], 0x6) // readable, writable
		switch p.typ {
		case ptUnicode, ptBinary:
			size := len(p.data)
			if p.typ == ptUnicode {
				size += 2
			}
			binary.LittleEndian.PutUint32(e[8:], uint32(size))
			st.Stream(fmt.Sprintf("__substg1.0_%04X%04X", p.id, p.typ), p.data)
		default:
			binary.LittleEndian.PutUint64(e[8:], p.fixed)
		}
		ps = append(ps, e...)
	}
	st.Stream("__properties_version1.0", ps)
}

func addrParts(s string) (name, addr string) {
	a, err := mail.ParseAddress(s)
	if err != nil {
		return s, s
	}
	if a.Name == "" {
		return a.Address, a.Address
	}
	return a.Name, a.Address
}

// ExportMSG writes raw as an Outlook message (.msg): subject, sender,
// recipients, dates, plain and HTML body, the original headers and every
// attachment.
func ExportMSG(raw []byte) ([]byte, error) {
	p, _ := ParseMessage(raw)
	meta := metaOf(raw)
	hdrEnd := strings.Index(string(raw), "\r\n\r\n")
	if hdrEnd < 0 {
		hdrEnd = strings.Index(string(raw), "\n\n")
	}
	headers := string(raw)
	if hdrEnd >= 0 {
		headers = string(raw[:hdrEnd+2])
	}
	date := time.Now().UTC()
	if d, err := mail.ParseDate(meta.Date); err == nil {
		date = d.UTC()
	}
	fromName, fromAddr := addrParts(meta.From)
	body := p.Text
	if body == "" && p.HTML != "" {
		body = htmlToText(p.HTML)
	}
	var tos []*mail.Address
	if l, err := mail.ParseAddressList(meta.To); err == nil {
		tos = l
	}
	var ccs []*mail.Address
	if l, err := p.Header.AddressList("Cc"); err == nil {
		ccs = l
	}
	display := func(l []*mail.Address) string {
		var s []string
		for _, a := range l {
			s = append(s, firstNonEmpty(a.Name, a.Address))
		}
		return strings.Join(s, "; ")
	}
	props := []mapiProp{
		pStr(0x001A, "IPM.Note"),
		pStr(0x0037, meta.Subject),
		pStr(0x0E1D, meta.Subject), // normalized subject
		pStr(0x1000, body),
		pStr(0x0C1A, fromName), pStr(0x0C1F, fromAddr), pStr(0x0C1E, "SMTP"),
		pStr(0x0042, fromName), pStr(0x0065, fromAddr), pStr(0x0064, "SMTP"),
		pStr(0x0E04, display(tos)), pStr(0x0E03, display(ccs)),
		pStr(0x007D, headers),
		pStr(0x1035, p.Header.Get("Message-Id")),
		pTime(0x0039, date), pTime(0x0E06, date),
		pLong(0x0E07, 1),          // message flags: read
		pLong(0x3FDE, 65001),      // internet code page: UTF-8
		pLong(0x340D, 0x00040000), // store support mask: unicode
	}
	if p.HTML != "" {
		props = append(props, pBin(0x1013, []byte(p.HTML)))
	}
	root := newCFB()
	nameid := root.Storage("__nameid_version1.0")
	nameid.Stream("__substg1.0_00020102", nil)
	nameid.Stream("__substg1.0_00030102", nil)
	nameid.Stream("__substg1.0_00040102", nil)
	var rcpts []mapiProp
	n := 0
	addRcpt := func(a *mail.Address, typ uint32) {
		st := root.Storage(fmt.Sprintf("__recip_version1.0_#%08X", n))
		rcpts = []mapiProp{
			pLong(0x0C15, typ), pLong(0x3000, uint32(n)),
			pStr(0x3001, firstNonEmpty(a.Name, a.Address)), pStr(0x3003, a.Address), pStr(0x3002, "SMTP"), pStr(0x39FE, a.Address),
		}
		writeProps(st, rcpts, 8, nil)
		n++
	}
	for _, a := range tos {
		addRcpt(a, 1)
	}
	for _, a := range ccs {
		addRcpt(a, 2)
	}
	for i, a := range p.Attachments {
		st := root.Storage(fmt.Sprintf("__attach_version1.0_#%08X", i))
		short := shortName(a.Name)
		writeProps(st, []mapiProp{
			pLong(0x3705, 1), pLong(0x0E21, uint32(i)), pLong(0x0E20, uint32(len(a.Data))), pLong(0x370B, 0xFFFFFFFF),
			pBin(0x3701, a.Data), pStr(0x3704, short), pStr(0x3707, a.Name), pStr(0x3001, a.Name), pStr(0x370E, a.ContentType),
		}, 8, nil)
	}
	writeProps(root, props, 32, []uint32{uint32(n), uint32(len(p.Attachments)), uint32(n), uint32(len(p.Attachments))})
	return root.Bytes()
}

// shortName makes an 8.3 name for PR_ATTACH_FILENAME.
func shortName(name string) string {
	base, ext := name, ""
	if i := strings.LastIndexByte(name, '.'); i > 0 {
		base, ext = name[:i], name[i:]
	}
	clip := func(s string, n int) string {
		r := []rune(s)
		if len(r) > n {
			r = r[:n]
		}
		return string(r)
	}
	if len([]rune(base)) > 8 {
		base = clip(base, 6) + "~1"
	}
	return base + clip(ext, 4)
}
