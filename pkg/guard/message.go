package guard

import (
	"bytes"
	"math"
)

// MessageLimits bound what one SIP message may hold. A zero field turns its
// check off.
type MessageLimits struct {
	// MaxBytes bounds a whole message: a UDP datagram, or a TCP/TLS
	// message's start line, headers and declared body.
	MaxBytes int
	// MaxHeaders bounds the header fields (a folded field counts once; a
	// comma-separated list counts once).
	MaxHeaders int
	// MaxHeaderBytes bounds the start line and each header field, folded
	// continuation lines included.
	MaxHeaderBytes int
	// MaxVias bounds the Via values, counted across Via fields and the
	// comma-separated values inside them.
	MaxVias int
}

func (m MessageLimits) on() bool {
	return m.MaxBytes > 0 || m.MaxHeaders > 0 || m.MaxHeaderBytes > 0 || m.MaxVias > 0
}

// maxStreamLine bounds one header field in a TCP/TLS stream even when
// MaxHeaderBytes is off: sipgo refuses messages over 64 KiB anyway.
const maxStreamLine = 65535

// Datagram is what InspectDatagram learned from a UDP datagram without
// parsing it.
type Datagram struct {
	// Reason is the limit the datagram breaks, or ReasonNone.
	Reason Reason
	// KeepAlive: the datagram is only CR and LF octets (RFC 5626
	// keep-alive); sipgo answers or ignores it.
	KeepAlive bool
	// Request: the start line is not a status line. Garbage counts as a
	// request, so that a junk flood is rate limited like a request flood.
	Request bool
	// Invite: the method is INVITE (compared as sipgo does, ignoring case).
	Invite bool
	// ToTag: the first To header field carries a tag parameter.
	ToTag bool
}

// NewCall reports whether the datagram looks like a new call: an INVITE
// whose To has no tag.
func (d Datagram) NewCall() bool { return d.Request && d.Invite && !d.ToTag }

// InspectDatagram checks a UDP datagram against lim and peeks at what the
// read filter needs (request or response, INVITE, To tag) in one pass over
// the start line and headers; the body is not read. It never allocates.
// Lines may end in CRLF or LF alone: a datagram sipgo cannot parse is still
// measured, never trusted.
func InspectDatagram(data []byte, lim MessageLimits) Datagram {
	var d Datagram
	if isKeepAlive(data) {
		d.KeepAlive = true
		return d
	}
	d.Request = !hasPrefixFold(data, "SIP/")
	if d.Request {
		sp := bytes.IndexByte(data, ' ')
		d.Invite = sp == len("INVITE") && hasPrefixFold(data, "INVITE")
	}
	if lim.MaxBytes > 0 && len(data) > lim.MaxBytes {
		d.Reason = ReasonTooLarge
		return d
	}
	var s scanner
	s.lim = lim
	s.wantTo = d.Request && d.Invite
	d.Reason = s.feed(data)
	if s.toStart > 0 && s.toEnd > s.toStart {
		d.ToTag = hasTagParam(data[s.toStart:s.toEnd])
	}
	return d
}

func isKeepAlive(data []byte) bool {
	if len(data) == 0 {
		return false
	}
	for _, c := range data {
		if c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}

func hasPrefixFold(b []byte, prefix string) bool {
	if len(b) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		if lower(b[i]) != lower(prefix[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// hasTagParam reports whether a To header value carries a tag parameter: a
// ';' outside quotes and angle brackets followed by "tag" and '=' (LWS
// allowed around each, as RFC 3261 allows).
func hasTagParam(v []byte) bool {
	if bytes.IndexByte(v, ';') < 0 {
		return false
	}
	inQuote, inAngle := false, false
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case inQuote:
			if c == '\\' {
				i++
			} else if c == '"' {
				inQuote = false
			}
		case c == '"':
			inQuote = true
		case c == '<':
			inAngle = true
		case c == '>':
			inAngle = false
		case c == ';' && !inAngle:
			j := skipLWS(v, i+1)
			if j+3 <= len(v) && hasPrefixFold(v[j:], "tag") {
				if k := skipLWS(v, j+3); k < len(v) && v[k] == '=' {
					return true
				}
			}
		}
	}
	return false
}

func skipLWS(v []byte, i int) int {
	for i < len(v) && (v[i] == ' ' || v[i] == '\t' || v[i] == '\r' || v[i] == '\n') {
		i++
	}
	return i
}

// Scanner states.
const (
	stStart   uint8 = iota // before a message: leading CRLFs, keep-alives
	stHeaders              // after the start line
	stBody                 // skipping a declared body (streams)
	stDone                 // end of the header section (datagrams)
)

// Line kinds.
const (
	lkStart  uint8 = iota + 1 // the start line
	lkMaybe                   // begins with CR: an empty line, or garbage
	lkHeader                  // first line of a header field
	lkCont                    // folded continuation line
)

// Header kinds.
const (
	hkOther uint8 = iota
	hkVia
	hkTo
	hkCL
)

// Content-Length parse states.
const (
	clLead uint8 = iota
	clDigits
	clTrail
	clBad
)

// scanner measures SIP messages incrementally, line by line, as bytes
// arrive. In datagram mode (stream false) it stops at the end of the header
// section. In stream mode it frames messages the way sipgo's stream parser
// does — lines end in CRLF, CRLFs before a start line are skipped, folded
// lines belong to the field above, the last Content-Length gives the body —
// and refuses (ReasonBadFraming) what sipgo would refuse in a way that
// leaves no message boundary: a bare CR or LF, a field with no colon, a
// missing or malformed Content-Length. When the two could disagree (a
// folded Content-Length split across reads) the scanner errs on closing.
type scanner struct {
	lim    MessageLimits
	stream bool
	wantTo bool // datagram: record the first To field's extent

	state uint8

	// current physical line
	inLine    bool
	lineKind  uint8
	lineLen   int
	pendingCR bool // stream: the last fragment ended in CR
	off       int  // datagram: offset of the fragment being fed

	// current message
	msgBytes int
	headers  int
	vias     int
	clSeen   bool
	clBad    bool
	clVal    uint64
	bodyLeft uint64
	messages int // complete messages framed (stream)

	// current header field
	hdrKind   uint8
	hdrOpen   bool
	hdrLen    int
	nameDone  bool
	name      [16]byte
	nameLen   int
	nameOver  bool
	nameSpace int // whitespace seen after the name's last octet
	inQuote   bool
	escape    bool
	clState   uint8
	clCur     uint64

	// datagram To field extent
	toStart, toEnd int
	toSeen         bool
}

func newStreamScanner(lim MessageLimits) *scanner {
	return &scanner{lim: lim, stream: true}
}

// idle reports whether the scanner is between messages.
func (s *scanner) idle() bool { return s.state == stStart && !s.inLine }

// feed scans p and returns the first limit broken, or ReasonNone. After a
// refusal the scanner must not be fed again.
func (s *scanner) feed(p []byte) Reason {
	for len(p) > 0 {
		switch s.state {
		case stDone:
			return ReasonNone
		case stBody:
			n := uint64(len(p))
			if n > s.bodyLeft {
				n = s.bodyLeft
			}
			s.bodyLeft -= n
			p = p[n:]
			s.off += int(n)
			if s.bodyLeft == 0 {
				s.endMessage()
			}
			continue
		}
		i := bytes.IndexByte(p, '\n')
		complete := i >= 0
		frag := p
		if complete {
			frag = p[:i]
		}
		if r := s.fragment(frag, complete); r != ReasonNone {
			return r
		}
		n := len(frag)
		if complete {
			n++
		}
		p = p[n:]
		s.off += n
	}
	return ReasonNone
}

// fragment handles part of a line (complete: the LF that ends it follows).
func (s *scanner) fragment(frag []byte, complete bool) Reason {
	n := len(frag)
	// bad is the index of the octet that makes the stream unframable (a
	// CR not followed by LF: the octet after it; a bare LF: n), or -1.
	bad := -1
	if s.stream {
		crEnd := n > 0 && frag[n-1] == '\r'
		body := frag
		if crEnd {
			body = frag[:n-1]
		}
		switch {
		case s.pendingCR && n > 0:
			bad = 0
		case bytes.IndexByte(body, '\r') >= 0:
			bad = bytes.IndexByte(body, '\r') + 1
		case complete && !crEnd && !s.pendingCR:
			bad = n // bare LF
		}
		s.pendingCR = crEnd && !complete
	}
	if bad == 0 {
		return ReasonBadFraming
	}
	if !s.inLine && n > 0 {
		s.inLine = true
		if r := s.beginLine(frag[0]); r != ReasonNone {
			return r
		}
	}
	if n > 0 {
		s.lineLen += n
		if r := s.content(frag, bad); r != ReasonNone {
			return r
		}
	}
	if bad >= 0 {
		return ReasonBadFraming
	}
	if complete {
		if s.state != stStart || s.lineKind == lkStart {
			s.msgBytes++ // the LF
		}
		r := s.endLine()
		s.inLine, s.lineKind, s.lineLen = false, 0, 0
		return r
	}
	return ReasonNone
}

func (s *scanner) beginLine(c byte) Reason {
	switch {
	case c == '\r':
		s.lineKind = lkMaybe
	case s.state == stStart:
		s.lineKind = lkStart
	case (c == ' ' || c == '\t') && s.hdrOpen:
		s.lineKind = lkCont
		if s.hdrKind == hkCL {
			s.clByte(' ') // folding joins lines with a space
		}
	default:
		return s.beginHeader()
	}
	return ReasonNone
}

func (s *scanner) beginHeader() Reason {
	if r := s.finishHeader(); r != ReasonNone {
		return r
	}
	s.lineKind = lkHeader
	s.hdrOpen = true
	s.hdrKind, s.hdrLen = hkOther, 0
	s.nameDone, s.nameLen, s.nameOver, s.nameSpace = false, 0, false, 0
	s.inQuote, s.escape = false, false
	s.headers++
	if s.lim.MaxHeaders > 0 && s.headers > s.lim.MaxHeaders {
		return ReasonTooManyHeaders
	}
	return ReasonNone
}

// content handles the octets of a line fragment. Limits are checked in
// octet order — the first limit the stream crosses is the one reported —
// so that the answer never depends on how the stream was cut into reads.
func (s *scanner) content(frag []byte, bad int) Reason {
	if s.lineKind == lkMaybe {
		// A line that began with CR and goes on is not empty.
		if s.lineLen == 1 {
			if s.state != stStart {
				s.msgBytes++
			}
			return ReasonNone
		}
		if s.stream {
			return ReasonBadFraming // CR and more: caught by fragment
		}
		if s.state == stStart {
			s.lineKind = lkStart
		} else if r := s.beginHeader(); r != ReasonNone {
			return r
		}
	}
	n := len(frag)
	// over is the index of the first octet past a length limit or that
	// breaks the framing (n: none).
	over, overReason := n, ReasonNone
	if bad >= 0 && bad < n {
		over, overReason = bad, ReasonBadFraming
	}
	msg := s.lineKind == lkStart || s.state != stStart
	if msg && s.stream {
		over, overReason = crossAt(over, overReason, n, s.msgBytes, s.lim.MaxBytes, ReasonTooLarge)
	}
	lineBefore := s.hdrLen
	if s.lineKind == lkStart {
		lineBefore = s.lineLen - n
	}
	over, overReason = crossAt(over, overReason, n, lineBefore, s.lim.MaxHeaderBytes, ReasonHeaderTooLong)
	if s.stream {
		over, overReason = crossAt(over, overReason, n, lineBefore, maxStreamLine, ReasonHeaderTooLong)
	}
	if msg {
		s.msgBytes += n
	}
	if s.lineKind == lkStart {
		if s.state == stStart {
			s.state = stHeaders
		}
		return overReason
	}
	s.hdrLen += n
	if r := s.value(frag[:over]); r != ReasonNone {
		return r
	}
	return overReason
}

// crossAt returns where n more octets after before cross limit (0: no
// limit), if that is before over.
func crossAt(over int, overReason Reason, n, before, limit int, r Reason) (int, Reason) {
	if limit > 0 && before+n > limit {
		if i := max(limit-before, 0); i < over {
			return i, r
		}
	}
	return over, overReason
}

// value handles the octets of a header field line within the limits.
func (s *scanner) value(v []byte) Reason {
	// The octets we look at exclude a line's final CR.
	if n := len(v); n > 0 && v[n-1] == '\r' {
		v = v[:n-1]
	}
	base := s.off
	if !s.nameDone && s.nameLen == 0 {
		// Fast path: the whole name is in this fragment.
		if i := indexColon(v); i >= 0 {
			s.nameDone = true
			s.hdrKind = s.kindOf(trimSpace(v[:i]))
			v = v[i+1:]
			base += i + 1
			if r := s.nameResolved(base); r != ReasonNone {
				return r
			}
		}
	}
	if !s.nameDone {
		i := 0
		for ; i < len(v); i++ {
			c := v[i]
			if c == ':' {
				s.nameDone = true
				s.resolveName()
				i++
				break
			}
			s.nameByte(c)
		}
		if !s.nameDone {
			return ReasonNone
		}
		v = v[i:]
		base += i
		if r := s.nameResolved(base); r != ReasonNone {
			return r
		}
	}
	switch s.hdrKind {
	case hkVia:
		return s.viaBytes(v)
	case hkTo:
		if s.wantTo && s.toSeen {
			s.toEnd = base + len(v)
		}
	case hkCL:
		for _, c := range v {
			s.clByte(c)
		}
	}
	return ReasonNone
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r'
}

// nameByte collects a header name as sipgo reads it: trimmed, compared
// without case. Names longer than the buffer are none we look for.
func (s *scanner) nameByte(c byte) {
	if isSpace(c) {
		if s.nameLen > 0 {
			s.nameSpace++
		}
		return
	}
	for ; s.nameSpace > 0; s.nameSpace-- {
		s.putName(' ')
	}
	s.putName(lower(c))
}

func (s *scanner) putName(c byte) {
	if s.nameLen >= len(s.name) {
		s.nameOver = true
		return
	}
	s.name[s.nameLen] = c
	s.nameLen++
}

func (s *scanner) resolveName() {
	if !s.nameOver {
		s.hdrKind = s.kindOf(s.name[:s.nameLen])
	}
}

// kindOf returns the kind of the header named name (trimmed).
func (s *scanner) kindOf(name []byte) uint8 {
	switch len(name) {
	case 1:
		switch lower(name[0]) {
		case 'v':
			return hkVia
		case 't':
			return s.toKind()
		case 'l':
			return s.clKind()
		}
	case 2:
		if hasPrefixFold(name, "to") {
			return s.toKind()
		}
	case 3:
		if hasPrefixFold(name, "via") {
			return hkVia
		}
	case 14:
		if hasPrefixFold(name, "content-length") {
			return s.clKind()
		}
	}
	return hkOther
}

func (s *scanner) toKind() uint8 {
	if s.stream {
		return hkOther
	}
	return hkTo
}

func (s *scanner) clKind() uint8 {
	if !s.stream {
		return hkOther
	}
	s.clState, s.clCur = clLead, 0
	return hkCL
}

// nameResolved acts on a field whose name is known; its value starts at
// offset base.
func (s *scanner) nameResolved(base int) Reason {
	switch s.hdrKind {
	case hkVia:
		return s.addVia()
	case hkTo:
		if s.wantTo && !s.toSeen {
			s.toSeen = true
			s.toStart, s.toEnd = base, base
		}
	}
	return ReasonNone
}

// indexColon is bytes.IndexByte(v, ':') tuned for header names, which are
// short: a plain loop first, the vectorised search past it.
func indexColon(v []byte) int {
	n := min(len(v), 24)
	for i := 0; i < n; i++ {
		if v[i] == ':' {
			return i
		}
	}
	if i := bytes.IndexByte(v[n:], ':'); i >= 0 {
		return n + i
	}
	return -1
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

func (s *scanner) addVia() Reason {
	s.vias++
	if s.lim.MaxVias > 0 && s.vias > s.lim.MaxVias {
		return ReasonTooManyVias
	}
	return ReasonNone
}

// viaBytes counts the comma-separated values of a Via field (commas inside
// quoted strings do not separate).
func (s *scanner) viaBytes(v []byte) Reason {
	if !s.inQuote && bytes.IndexByte(v, ',') < 0 && bytes.IndexByte(v, '"') < 0 {
		return ReasonNone
	}
	for _, c := range v {
		switch {
		case s.escape:
			s.escape = false
		case s.inQuote:
			if c == '\\' {
				s.escape = true
			} else if c == '"' {
				s.inQuote = false
			}
		case c == '"':
			s.inQuote = true
		case c == ',':
			if r := s.addVia(); r != ReasonNone {
				return r
			}
		}
	}
	return ReasonNone
}

// clByte parses a Content-Length value as strconv.ParseUint(TrimSpace(v),
// 10, 32) would.
func (s *scanner) clByte(c byte) {
	switch s.clState {
	case clLead:
		switch {
		case isSpace(c):
		case c >= '0' && c <= '9':
			s.clState, s.clCur = clDigits, uint64(c-'0')
		default:
			s.clState = clBad
		}
	case clDigits:
		switch {
		case c >= '0' && c <= '9':
			s.clCur = s.clCur*10 + uint64(c-'0')
			if s.clCur > math.MaxUint32 {
				s.clState = clBad
			}
		case isSpace(c):
			s.clState = clTrail
		default:
			s.clState = clBad
		}
	case clTrail:
		if !isSpace(c) {
			s.clState = clBad
		}
	}
}

// finishHeader closes the open header field. In a stream, a field that
// never had a colon (not even on a folded line) is unframable.
func (s *scanner) finishHeader() Reason {
	if !s.hdrOpen {
		return ReasonNone
	}
	s.hdrOpen = false
	if !s.nameDone && s.stream {
		return ReasonBadFraming
	}
	if s.hdrKind == hkCL {
		if s.clState == clDigits || s.clState == clTrail {
			s.clSeen, s.clVal = true, s.clCur
		} else {
			s.clBad = true
		}
	}
	if s.hdrKind == hkTo && s.toSeen {
		s.wantTo = false // only the first To
	}
	return ReasonNone
}

func (s *scanner) endLine() Reason {
	empty := s.lineLen == 0 || s.lineKind == lkMaybe
	if empty {
		if s.state == stStart {
			return ReasonNone // CRLF before a start line
		}
		return s.endHeaders()
	}
	return ReasonNone
}

func (s *scanner) endHeaders() Reason {
	if r := s.finishHeader(); r != ReasonNone {
		return r
	}
	if !s.stream {
		s.state = stDone
		return ReasonNone
	}
	if s.clBad || !s.clSeen {
		return ReasonBadFraming
	}
	if s.lim.MaxBytes > 0 && uint64(s.msgBytes)+s.clVal > uint64(s.lim.MaxBytes) {
		return ReasonTooLarge
	}
	if s.clVal == 0 {
		s.endMessage()
		return ReasonNone
	}
	s.state, s.bodyLeft = stBody, s.clVal
	return ReasonNone
}

func (s *scanner) endMessage() {
	s.messages++
	s.state = stStart
	s.msgBytes, s.headers, s.vias = 0, 0, 0
	s.clSeen, s.clBad, s.clVal = false, false, 0
	s.hdrOpen = false
}
