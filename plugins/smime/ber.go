package smime

import (
	"errors"
	"fmt"
)

// normalizeBER rewrites BER as DER enough for encoding/asn1: indefinite
// lengths become definite and constructed universal OCTET STRINGs become
// primitive. Other constructed string forms are left alone. The nesting
// depth is bounded so that hostile input cannot exhaust the stack.
func normalizeBER(b []byte) ([]byte, error) {
	if len(b) > maxCMSSize {
		return nil, errors.New("smime: CMS object too large")
	}
	out, rest, err := berValue(b, 0)
	if err != nil {
		return nil, fmt.Errorf("smime: malformed BER/DER: %w", err)
	}
	if len(rest) > 0 {
		return nil, errors.New("smime: trailing data after the CMS object")
	}
	return out, nil
}

const maxBERDepth = 64

type berHeader struct {
	class, tag  int
	constructed bool
	tagBytes    []byte // the identifier octets as found
	length      int    // -1: indefinite
}

func readHeader(b []byte) (h berHeader, rest []byte, err error) {
	if len(b) < 2 {
		return h, nil, errors.New("truncated header")
	}
	i := 0
	id := b[0]
	h.class = int(id >> 6)
	h.constructed = id&0x20 != 0
	h.tag = int(id & 0x1f)
	i++
	if h.tag == 0x1f {
		h.tag = 0
		for {
			if i >= len(b) {
				return h, nil, errors.New("truncated tag")
			}
			c := b[i]
			i++
			if h.tag > 1<<23 {
				return h, nil, errors.New("tag number too large")
			}
			h.tag = h.tag<<7 | int(c&0x7f)
			if c&0x80 == 0 {
				break
			}
		}
	}
	h.tagBytes = b[:i]
	if i >= len(b) {
		return h, nil, errors.New("truncated length")
	}
	l := b[i]
	i++
	switch {
	case l < 0x80:
		h.length = int(l)
	case l == 0x80:
		if !h.constructed {
			return h, nil, errors.New("indefinite length on a primitive value")
		}
		h.length = -1
	default:
		n := int(l & 0x7f)
		if n > 4 {
			return h, nil, errors.New("length too large")
		}
		if i+n > len(b) {
			return h, nil, errors.New("truncated length")
		}
		h.length = 0
		for _, c := range b[i : i+n] {
			h.length = h.length<<8 | int(c)
		}
		i += n
	}
	if h.length > len(b)-i {
		return h, nil, errors.New("value longer than the data (truncated?)")
	}
	return h, b[i:], nil
}

// berValue reads one value from b and returns its DER-ish form and the
// remaining bytes.
func berValue(b []byte, depth int) ([]byte, []byte, error) {
	if depth > maxBERDepth {
		return nil, nil, errors.New("nested too deeply")
	}
	h, rest, err := readHeader(b)
	if err != nil {
		return nil, nil, err
	}
	if !h.constructed {
		return appendHeader(nil, h.tagBytes, h.length, rest[:h.length]), rest[h.length:], nil
	}
	var content []byte
	var children [][]byte
	if h.length >= 0 {
		body := rest[:h.length]
		rest = rest[h.length:]
		for len(body) > 0 {
			var child []byte
			child, body, err = berValue(body, depth+1)
			if err != nil {
				return nil, nil, err
			}
			children = append(children, child)
		}
	} else {
		for {
			if len(rest) >= 2 && rest[0] == 0 && rest[1] == 0 {
				rest = rest[2:]
				break
			}
			if len(rest) == 0 {
				return nil, nil, errors.New("missing end-of-contents (truncated?)")
			}
			var child []byte
			child, rest, err = berValue(rest, depth+1)
			if err != nil {
				return nil, nil, err
			}
			children = append(children, child)
		}
	}
	if h.class == 0 && h.tag == 4 {
		// Constructed OCTET STRING: concatenate the segments.
		var data []byte
		for _, c := range children {
			ch, body, err := readHeader(c)
			if err != nil || ch.class != 0 || ch.tag != 4 || ch.constructed {
				return nil, nil, errors.New("constructed OCTET STRING with a non-OCTET STRING segment")
			}
			data = append(data, body[:ch.length]...)
		}
		return appendHeader(nil, []byte{0x04}, len(data), data), rest, nil
	}
	for _, c := range children {
		content = append(content, c...)
	}
	return appendHeader(nil, h.tagBytes, len(content), content), rest, nil
}

func appendHeader(dst, tag []byte, n int, content []byte) []byte {
	dst = append(dst, tag...)
	switch {
	case n < 0x80:
		dst = append(dst, byte(n))
	case n < 1<<8:
		dst = append(dst, 0x81, byte(n))
	case n < 1<<16:
		dst = append(dst, 0x82, byte(n>>8), byte(n))
	case n < 1<<24:
		dst = append(dst, 0x83, byte(n>>16), byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x84, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(dst, content...)
}
