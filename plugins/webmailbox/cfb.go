package webmailbox

import (
	"encoding/binary"
	"errors"
	"sort"
	"strings"
	"unicode/utf16"
)

// A minimal Compound File Binary (MS-CFB) writer, version 3 (512-byte
// sectors), enough for Outlook .msg files: storages and streams, the
// mini stream for streams under 4096 bytes, DIFAT sectors for files over
// about 6.8 MB.

const (
	cfbSector     = 512
	cfbMini       = 64
	cfbCutoff     = 4096
	cfbFree       = 0xFFFFFFFF
	cfbEndOfChain = 0xFFFFFFFE
	cfbFATSect    = 0xFFFFFFFD
	cfbDIFSect    = 0xFFFFFFFC
	cfbNoStream   = 0xFFFFFFFF
	cfbMaxFAT     = 109
)

// errCFBTooLarge: version 3 files stay below 2 GB.
var errCFBTooLarge = errors.New("webmailbox: message too large for .msg export")

type cfbNode struct {
	name     string
	stream   bool
	data     []byte
	children []*cfbNode
	id       uint32
	start    uint32
	left     uint32
	right    uint32
	child    uint32
}

// cfbStorage is a storage under construction.
type cfbStorage struct{ n *cfbNode }

func newCFB() *cfbStorage { return &cfbStorage{&cfbNode{name: "Root Entry"}} }

func (s *cfbStorage) Stream(name string, data []byte) {
	s.n.children = append(s.n.children, &cfbNode{name: name, stream: true, data: data})
}

func (s *cfbStorage) Storage(name string) *cfbStorage {
	c := &cfbNode{name: name}
	s.n.children = append(s.n.children, c)
	return &cfbStorage{c}
}

// cfbLess is the directory order: shorter names first, then by upper case.
func cfbLess(a, b string) bool {
	ua, ub := utf16.Encode([]rune(a)), utf16.Encode([]rune(b))
	if len(ua) != len(ub) {
		return len(ua) < len(ub)
	}
	return strings.ToUpper(a) < strings.ToUpper(b)
}

// Bytes lays out and returns the compound file.
func (s *cfbStorage) Bytes() ([]byte, error) {
	// Number the directory entries: root first, then depth first.
	var nodes []*cfbNode
	var number func(n *cfbNode)
	number = func(n *cfbNode) {
		n.id = uint32(len(nodes))
		nodes = append(nodes, n)
		sort.Slice(n.children, func(i, j int) bool { return cfbLess(n.children[i].name, n.children[j].name) })
		for _, c := range n.children {
			number(c)
		}
	}
	number(s.n)
	for _, n := range nodes {
		n.left, n.right, n.child = cfbNoStream, cfbNoStream, cfbNoStream
	}
	for _, n := range nodes {
		if len(n.children) > 0 {
			n.child = balance(n.children)
		}
	}

	// Mini stream for small streams.
	var mini []byte
	var miniFAT []uint32
	for _, n := range nodes {
		if !n.stream || len(n.data) >= cfbCutoff {
			continue
		}
		if len(n.data) == 0 {
			n.start = cfbEndOfChain
			continue
		}
		n.start = uint32(len(mini) / cfbMini)
		cnt := (len(n.data) + cfbMini - 1) / cfbMini
		for i := 0; i < cnt; i++ {
			next := n.start + uint32(i) + 1
			if i == cnt-1 {
				next = cfbEndOfChain
			}
			miniFAT = append(miniFAT, next)
		}
		mini = append(mini, n.data...)
		mini = append(mini, make([]byte, cnt*cfbMini-len(n.data))...)
	}

	// Regular sectors: big streams, the mini stream, the mini FAT, the
	// directory, then the FAT.
	var fat []uint32
	var body []byte
	place := func(data []byte) uint32 {
		if len(data) == 0 {
			return cfbEndOfChain
		}
		start := uint32(len(fat))
		cnt := (len(data) + cfbSector - 1) / cfbSector
		for i := 0; i < cnt; i++ {
			next := start + uint32(i) + 1
			if i == cnt-1 {
				next = cfbEndOfChain
			}
			fat = append(fat, next)
		}
		body = append(body, data...)
		body = append(body, make([]byte, cnt*cfbSector-len(data))...)
		return start
	}
	for _, n := range nodes {
		if n.stream && len(n.data) >= cfbCutoff {
			n.start = place(n.data)
		}
	}
	s.n.start = place(mini)
	s.n.data = mini // root's size is the mini stream's
	miniFATStart := uint32(cfbEndOfChain)
	if len(miniFAT) > 0 {
		mf := make([]byte, len(miniFAT)*4)
		for i, v := range miniFAT {
			binary.LittleEndian.PutUint32(mf[i*4:], v)
		}
		miniFATStart = place(mf)
	}
	dir := make([]byte, 0, len(nodes)*128)
	for _, n := range nodes {
		dir = append(dir, n.entry()...)
	}
	for len(dir)%cfbSector != 0 { // unused entries
		e := make([]byte, 128)
		binary.LittleEndian.PutUint32(e[68:], cfbNoStream)
		binary.LittleEndian.PutUint32(e[72:], cfbNoStream)
		binary.LittleEndian.PutUint32(e[76:], cfbNoStream)
		dir = append(dir, e...)
	}
	dirStart := place(dir)
	// FAT sectors cover every sector including themselves and the DIFAT
	// sectors that list the FAT sectors beyond the header's 109.
	nFAT, nDIFAT := 1, 0
	for {
		nDIFAT = 0
		if nFAT > cfbMaxFAT {
			nDIFAT = (nFAT - cfbMaxFAT + 126) / 127
		}
		need := (len(fat) + nFAT + nDIFAT + 127) / 128
		if need <= nFAT {
			break
		}
		nFAT = need
	}
	if int64(len(fat)+nFAT+nDIFAT)*cfbSector > 1<<31 {
		return nil, errCFBTooLarge
	}
	fatStart := uint32(len(fat))
	for i := 0; i < nFAT; i++ {
		fat = append(fat, cfbFATSect)
	}
	difatStart := uint32(len(fat))
	for i := 0; i < nDIFAT; i++ {
		fat = append(fat, cfbDIFSect)
	}
	fatBytes := make([]byte, nFAT*cfbSector)
	for i := range fatBytes {
		fatBytes[i] = 0xFF
	}
	for i, v := range fat {
		binary.LittleEndian.PutUint32(fatBytes[i*4:], v)
	}
	difat := make([]byte, nDIFAT*cfbSector)
	for i := range difat {
		difat[i] = 0xFF
	}
	for d := 0; d < nDIFAT; d++ {
		sec := difat[d*cfbSector:]
		for j := 0; j < 127; j++ {
			if k := cfbMaxFAT + d*127 + j; k < nFAT {
				binary.LittleEndian.PutUint32(sec[j*4:], fatStart+uint32(k))
			}
		}
		next := uint32(cfbEndOfChain)
		if d < nDIFAT-1 {
			next = difatStart + uint32(d) + 1
		}
		binary.LittleEndian.PutUint32(sec[508:], next)
	}

	h := make([]byte, cfbSector)
	copy(h, []byte{0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1})
	binary.LittleEndian.PutUint16(h[24:], 0x003E)
	binary.LittleEndian.PutUint16(h[26:], 0x0003)
	binary.LittleEndian.PutUint16(h[28:], 0xFFFE)
	binary.LittleEndian.PutUint16(h[30:], 9)
	binary.LittleEndian.PutUint16(h[32:], 6)
	binary.LittleEndian.PutUint32(h[44:], uint32(nFAT))
	binary.LittleEndian.PutUint32(h[48:], dirStart)
	binary.LittleEndian.PutUint32(h[56:], cfbCutoff)
	binary.LittleEndian.PutUint32(h[60:], miniFATStart)
	binary.LittleEndian.PutUint32(h[64:], uint32((len(miniFAT)*4+cfbSector-1)/cfbSector))
	if nDIFAT > 0 {
		binary.LittleEndian.PutUint32(h[68:], difatStart)
	} else {
		binary.LittleEndian.PutUint32(h[68:], cfbEndOfChain)
	}
	binary.LittleEndian.PutUint32(h[72:], uint32(nDIFAT))
	for i := 0; i < cfbMaxFAT; i++ {
		v := uint32(cfbFree)
		if i < nFAT {
			v = fatStart + uint32(i)
		}
		binary.LittleEndian.PutUint32(h[76+i*4:], v)
	}
	out := append(h, body...)
	out = append(out, fatBytes...)
	return append(out, difat...), nil
}

// balance links sorted siblings as a balanced binary tree and returns the
// root's id. Every node is black; readers only walk the tree.
func balance(ns []*cfbNode) uint32 {
	if len(ns) == 0 {
		return cfbNoStream
	}
	m := len(ns) / 2
	ns[m].left = balance(ns[:m])
	ns[m].right = balance(ns[m+1:])
	return ns[m].id
}

func (n *cfbNode) entry() []byte {
	e := make([]byte, 128)
	u := utf16.Encode([]rune(n.name))
	if len(u) > 31 {
		u = u[:31]
	}
	for i, c := range u {
		binary.LittleEndian.PutUint16(e[i*2:], c)
	}
	binary.LittleEndian.PutUint16(e[64:], uint16((len(u)+1)*2))
	switch {
	case n.id == 0:
		e[66] = 5
	case n.stream:
		e[66] = 2
	default:
		e[66] = 1
	}
	e[67] = 1 // black
	binary.LittleEndian.PutUint32(e[68:], n.left)
	binary.LittleEndian.PutUint32(e[72:], n.right)
	binary.LittleEndian.PutUint32(e[76:], n.child)
	if n.stream || n.id == 0 {
		binary.LittleEndian.PutUint32(e[116:], n.start)
		binary.LittleEndian.PutUint32(e[120:], uint32(len(n.data)))
	}
	return e
}
