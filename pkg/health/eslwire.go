package health

// Wire format of the FreeSWITCH Event Socket (inbound mode), as described in
// shared/esl.md and checked against the captures in shared/esl-real-transcripts.md.
// Everything here reads bytes that come off the network, so every function
// bounds what it accepts and never panics; eslwire_fuzz_test.go fuzzes them.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

const (
	// eslMaxHeaderBytes caps one header block, blank lines before it
	// included. FreeSWITCH's largest outer header block is a few hundred
	// bytes (log/data); events put their headers in the body.
	eslMaxHeaderBytes = 64 << 10
	// eslMaxBody is the default cap on one message body. CHANNEL_* events
	// with many channel variables are tens of KiB; master FreeSWITCH caps
	// incoming Content-Length at the same 16 MiB.
	eslMaxBody = 16 << 20
	// eslBodyHeader is the pseudo-header under which parseEventPlain
	// returns an event's own body; FreeSWITCH uses the same name when it
	// serializes an event with a body as JSON.
	eslBodyHeader = "_body"
)

// Errors of the wire layer. Each means the byte stream cannot be trusted any
// more: the caller drops the connection.
var (
	errESLHeaderTooLarge = errors.New("esl: header block larger than 64 KiB")
	errESLBodyTooLarge   = errors.New("esl: Content-Length above the body size limit")
	errESLBadHeader      = errors.New("esl: malformed header line")
	errESLBadLength      = errors.New("esl: malformed Content-Length")
)

// eslHeader is one "Name: value" line, value URL-decoded.
type eslHeader struct {
	name, value string
}

// eslHeaders is an ordered header list; names may repeat.
type eslHeaders []eslHeader

// get returns the value of the first header called name (compared without
// regard to case, as FreeSWITCH's own lookups do) and whether there is one.
func (hs eslHeaders) get(name string) (string, bool) {
	for _, h := range hs {
		if strings.EqualFold(h.name, name) {
			return h.value, true
		}
	}
	return "", false
}

// value is get without the presence flag.
func (hs eslHeaders) value(name string) string {
	v, _ := hs.get(name)
	return v
}

// eslMessage is one message from FreeSWITCH: a header block and an optional
// body of exactly Content-Length bytes.
type eslMessage struct {
	headers eslHeaders // in wire order
	body    []byte     // nil without Content-Length
}

// header returns the value of the first header called name, or "".
func (m *eslMessage) header(name string) string { return m.headers.value(name) }

// contentType returns the Content-Type header: auth/request, command/reply,
// api/response, text/event-plain, text/disconnect-notice, ...
func (m *eslMessage) contentType() string { return m.header("Content-Type") }

// readESLMessage reads one message: a block of "Name: value" lines ended by
// an empty line, then, when there is a Content-Length header, exactly that
// many body bytes. Lines end in LF; a CR before the LF is dropped. Empty
// lines before the block are skipped. Header values are URL-decoded (as
// libesl does) and leading blanks after the colon dropped. A header block
// over eslMaxHeaderBytes or a body over maxBody (eslMaxBody when <= 0) is an
// error, as is a line without a colon or with an empty name.
//
// It returns io.EOF when the stream ends cleanly before a message starts and
// io.ErrUnexpectedEOF when it ends inside one.
func readESLMessage(r *bufio.Reader, maxBody int) (*eslMessage, error) {
	if maxBody <= 0 {
		maxBody = eslMaxBody
	}
	budget := eslMaxHeaderBytes
	m := &eslMessage{}
	for {
		line, err := readESLLine(r, &budget)
		if err != nil {
			if errors.Is(err, io.EOF) && len(m.headers) > 0 {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if len(line) == 0 {
			if len(m.headers) == 0 {
				continue // blank lines between messages
			}
			break
		}
		h, err := parseESLHeaderLine(line)
		if err != nil {
			return nil, err
		}
		m.headers = append(m.headers, h)
	}
	n, ok, err := contentLength(m.headers, maxBody)
	if err != nil {
		return nil, err
	}
	if !ok || n == 0 {
		return m, nil
	}
	if m.body, err = readESLBody(r, n); err != nil {
		return nil, err
	}
	return m, nil
}

// readESLBody reads exactly n bytes. The buffer grows with what actually
// arrives, so a peer cannot make us allocate maxBody by just announcing it.
func readESLBody(r io.Reader, n int) ([]byte, error) {
	const chunk = 64 << 10
	body := make([]byte, 0, min(n, chunk))
	for len(body) < n {
		if len(body) == cap(body) {
			body = slices.Grow(body, min(n-len(body), cap(body)))
		}
		k, err := r.Read(body[len(body):min(cap(body), n)])
		body = body[:len(body)+k]
		if err != nil && len(body) < n {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return body, nil
}

// readESLLine returns the next line without its LF (and a CR before it),
// charging its length to *budget. The result is a fresh copy. A stream that
// ends on a partial line returns io.ErrUnexpectedEOF, one that ends on a
// line boundary io.EOF.
func readESLLine(r *bufio.Reader, budget *int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		*budget -= len(chunk)
		if *budget < 0 {
			return nil, errESLHeaderTooLarge
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
			line = line[:len(line)-1]
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if len(line) > 0 {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, io.EOF
		default:
			return nil, err
		}
	}
}

// parseESLHeaderLine splits "Name: value" at the first colon, drops blanks
// before the value and URL-decodes it.
func parseESLHeaderLine(line []byte) (eslHeader, error) {
	name, raw, err := splitESLHeaderLine(line)
	if err != nil {
		return eslHeader{}, err
	}
	return eslHeader{name: name, value: eslURLDecode(string(raw))}, nil
}

// splitESLHeaderLine splits "Name: value" at the first colon and drops
// blanks before the value, which it returns undecoded.
func splitESLHeaderLine(line []byte) (name string, raw []byte, err error) {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return "", nil, fmt.Errorf("%w: %q", errESLBadHeader, truncateForError(line))
	}
	return string(line[:i]), bytes.TrimLeft(line[i+1:], " \t"), nil
}

// contentLength returns the Content-Length of a header list and whether it
// has one. Repeated Content-Length headers must agree.
func contentLength(hs eslHeaders, maxBody int) (n int, ok bool, err error) {
	for _, h := range hs {
		if !strings.EqualFold(h.name, "Content-Length") {
			continue
		}
		v, err := parseESLLength(h.value, maxBody)
		if err != nil {
			return 0, false, err
		}
		if ok && v != n {
			return 0, false, fmt.Errorf("%w: conflicting values %d and %d", errESLBadLength, n, v)
		}
		n, ok = v, true
	}
	return n, ok, nil
}

// parseESLLength parses a decimal length of at most limit: digits only, no
// sign, no blanks (FreeSWITCH writes it with "%d").
func parseESLLength(s string, limit int) (int, error) {
	if s == "" {
		return 0, fmt.Errorf("%w: empty", errESLBadLength)
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: %q", errESLBadLength, truncateForError([]byte(s)))
		}
		n = n*10 + int(c-'0')
		if n > limit {
			return 0, fmt.Errorf("%w: %s bytes, limit %d", errESLBodyTooLarge, truncateForError([]byte(s)), limit)
		}
	}
	return n, nil
}

// eslURLDecode undoes switch_url_encode: every "%XX" with two hex digits
// becomes that byte; anything else, a lone '%' or a '+' included, stays as
// it is (FreeSWITCH never encodes a space as '+').
func eslURLDecode(s string) string {
	i := strings.IndexByte(s, '%')
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	b.WriteString(s[:i])
	for ; i < len(s); i++ {
		c := s[i]
		if c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// parseEventPlain parses the body of a text/event-plain message: one
// "Name: url-encoded-value" line per header, then an empty line. Values are
// URL-decoded; the bare token "_undef_", which is how FreeSWITCH writes an
// empty value, becomes "". When
// the headers include a Content-Length, the event has a body of its own
// (BACKGROUND_JOB output, for one) right after the empty line; it is
// returned as a last pseudo-header named "_body". Data past the end of the
// event is an error; a body that ends without the closing empty line is
// accepted.
func parseEventPlain(body []byte) (eslHeaders, error) {
	var hs eslHeaders
	rest := body
	for len(rest) > 0 {
		var line []byte
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			line, rest = rest, nil
		}
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) == 0 {
			if len(hs) == 0 {
				continue
			}
			break
		}
		name, raw, err := splitESLHeaderLine(line)
		if err != nil {
			return nil, fmt.Errorf("event: %w", err)
		}
		value := "" // FreeSWITCH writes an empty value as the bare token _undef_
		if string(raw) != "_undef_" {
			value = eslURLDecode(string(raw))
		}
		hs = append(hs, eslHeader{name: name, value: value})
	}
	if len(hs) == 0 {
		return nil, errors.New("esl: event: no headers")
	}
	n, ok, err := contentLength(hs, eslMaxBody)
	if err != nil {
		return nil, fmt.Errorf("event body: %w", err)
	}
	if ok {
		if n > len(rest) {
			return nil, fmt.Errorf("esl: event body: Content-Length %d, %d bytes left", n, len(rest))
		}
		hs = append(hs, eslHeader{name: eslBodyHeader, value: string(rest[:n])})
		rest = rest[n:]
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("esl: event: %d bytes after the end of the event", len(rest))
	}
	return hs, nil
}

// statusFigures is what the `api status` reply says. Each have* flag tells
// whether its line was found and parsed.
type statusFigures struct {
	sessions     int64 // "N session(s) - peak P, last 5min Q": live sessions
	sessionsPeak int64 // P

	maxSessions int64 // "K session(s) max"

	// "X session(s) per Sec out of max Y, ...": X sessions were created in
	// the last full second, Y is the configured sessions-per-second.
	spsLast, spsMax int64
	haveSPS         bool

	// "min idle cpu A/B": A is min-idle-cpu, B the current idle CPU (%).
	minIdleCPU, idleCPU float64
	haveIdleCPU         bool

	ready   bool   // "... is ready" (false: "is not ready")
	version string // first word after "(Version ", e.g. "1.11.0-release"
}

// sessionsPerSecBudget is the creation budget left per second as far as
// status tells it: the configured limit minus what the last full second
// used. HEARTBEAT's Session-Per-Sec is the same budget sampled within the
// current second.
func (f statusFigures) sessionsPerSecBudget() int64 { return max(f.spsMax-f.spsLast, 0) }

// parseStatus parses the body of `api status` (mod_commands status_function):
//
//	UP 0 years, 0 days, 0 hours, 1 minute, 56 seconds, 192 milliseconds, 522 microseconds
//	FreeSWITCH (Version 1.11.0-release  64bit) is ready
//	3 session(s) since startup
//	3 session(s) - peak 3, last 5min 3
//	1 session(s) per Sec out of max 200, peak 2, last 5min 2
//	1000 session(s) max
//	min idle cpu 0.00/2.27
//	Current Stack Size/Max 240K/8192K
//
// The version/readiness line, the live sessions line and the max sessions
// line are required: without any of them the reply is an error. The
// per-second and idle CPU lines are optional: when one is missing or does
// not parse, its have* flag stays false and the other figures still count.
func parseStatus(body []byte) (statusFigures, error) {
	var f statusFigures
	var haveReady, haveSessions, haveMax bool
	text := string(body)
	if strings.HasPrefix(text, "-ERR") {
		return f, fmt.Errorf("esl: status: %s", firstLine(text))
	}
	for line := range strings.Lines(text) {
		line = strings.TrimRight(line, " \t\r\n")
		switch {
		case strings.Contains(line, "(Version "):
			v, ready, err := parseStatusVersionLine(line)
			if err != nil {
				return f, err
			}
			f.version, f.ready, haveReady = v, ready, true
		case strings.Contains(line, " session(s) - peak "):
			n, rest, _ := strings.Cut(line, " session(s) - peak ")
			v, err := parseCount(n)
			if err != nil {
				return f, fmt.Errorf("esl: status: sessions: %w", err)
			}
			f.sessions, haveSessions = v, true
			peak, _, _ := strings.Cut(rest, ",")
			if p, err := parseCount(peak); err == nil {
				f.sessionsPeak = p
			}
		case strings.Contains(line, " session(s) per Sec out of max "):
			last, rest, _ := strings.Cut(line, " session(s) per Sec out of max ")
			limit, _, _ := strings.Cut(rest, ",")
			l, err1 := parseCount(last)
			m, err2 := parseCount(limit)
			if err1 == nil && err2 == nil {
				f.spsLast, f.spsMax, f.haveSPS = l, m, true
			}
		case strings.HasSuffix(line, " session(s) max"):
			v, err := parseCount(strings.TrimSuffix(line, " session(s) max"))
			if err != nil {
				return f, fmt.Errorf("esl: status: max sessions: %w", err)
			}
			f.maxSessions, haveMax = v, true
		case strings.HasPrefix(line, "min idle cpu "):
			minIdle, cur, _ := strings.Cut(strings.TrimPrefix(line, "min idle cpu "), "/")
			a, err1 := parsePercent(minIdle)
			b, err2 := parsePercent(cur)
			if err1 == nil && err2 == nil {
				f.minIdleCPU, f.idleCPU, f.haveIdleCPU = a, b, true
			}
		}
	}
	switch {
	case !haveReady:
		return f, errors.New("esl: status: no version line")
	case !haveSessions:
		return f, errors.New("esl: status: no session count line")
	case !haveMax:
		return f, errors.New("esl: status: no max sessions line")
	}
	return f, nil
}

// parseStatusVersionLine parses "FreeSWITCH (Version 1.11.0-release  64bit) is ready".
func parseStatusVersionLine(line string) (version string, ready bool, err error) {
	_, rest, _ := strings.Cut(line, "(Version ")
	inner, state, found := strings.Cut(rest, ") is ")
	if !found {
		return "", false, fmt.Errorf("esl: status: version line: %q", truncateForError([]byte(line)))
	}
	switch state {
	case "ready":
		ready = true
	case "not ready":
	default:
		return "", false, fmt.Errorf("esl: status: readiness %q", truncateForError([]byte(state)))
	}
	if fs := strings.Fields(inner); len(fs) > 0 {
		version = fs[0]
	}
	return version, ready, nil
}

// parseCount parses a non-negative decimal count.
func parseCount(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" || s[0] == '+' || s[0] == '-' {
		return 0, fmt.Errorf("not a count: %q", truncateForError([]byte(s)))
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("not a count: %q", truncateForError([]byte(s)))
	}
	return v, nil
}

// parsePercent parses a CPU percentage: finite, clamped to 0..100.
func parsePercent(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("not a percentage: %q", truncateForError([]byte(s)))
	}
	return min(max(v, 0), 100), nil
}

// parseSofiaStatus reads the table `api sofia status` prints:
//
//	                     Name	   Type	                                      Data	State
//	=================================================================================================
//	                       lb	profile	              sip:mod_sofia@127.0.0.1:5080	RUNNING (0)
//	=================================================================================================
//	1 profile 0 aliases
//
// known is true when the reply is that table. running is true when it lists
// at least one profile and every profile row is RUNNING; alias and gateway
// rows do not count. mod_sofia lists only started profiles, so a profile
// that failed to start (its port taken, say) is simply missing: a node with
// no profile at all takes no SIP.
func parseSofiaStatus(body []byte) (known, running bool) {
	profiles, down := 0, 0
	for line := range strings.Lines(string(body)) {
		line = strings.TrimRight(line, "\r\n")
		cols := strings.Split(line, "\t")
		if len(cols) < 4 {
			continue
		}
		for i := range cols {
			cols[i] = strings.TrimSpace(cols[i])
		}
		if cols[0] == "Name" && cols[1] == "Type" && cols[3] == "State" {
			known = true
			continue
		}
		if !known || cols[1] != "profile" {
			continue
		}
		profiles++
		if !strings.HasPrefix(cols[3], "RUNNING") {
			down++
		}
	}
	return known, known && profiles > 0 && down == 0
}

// parseCallsCount parses the body of `api show calls count` (or `show
// channels count`): "\n3 total.\n".
func parseCallsCount(body []byte) (int64, error) {
	s := strings.TrimSpace(string(body))
	n, found := strings.CutSuffix(s, " total.")
	if !found {
		return 0, fmt.Errorf("esl: show count: %q", truncateForError(body))
	}
	v, err := parseCount(n)
	if err != nil {
		return 0, fmt.Errorf("esl: show count: %w", err)
	}
	return v, nil
}

// parseBoolReply parses the "true"/"false" body of `fsctl pause_check` and
// friends (no newline on the wire; blanks are tolerated).
func parseBoolReply(body []byte) (bool, error) {
	switch strings.TrimSpace(string(body)) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, fmt.Errorf("esl: expected true or false, got %q", truncateForError(body))
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return string(truncateForError([]byte(strings.TrimSpace(l))))
}

// truncateForError shortens untrusted bytes quoted in an error message.
func truncateForError(b []byte) []byte {
	const n = 64
	if len(b) > n {
		return append(b[:n:n], "..."...)
	}
	return b
}
