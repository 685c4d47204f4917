package health

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// transcript returns a captured FreeSWITCH message byte for byte; see
// testdata/README.md.
func transcript(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "transcripts", name+".txt"))
	require.NoError(t, err)
	return b
}

// synthetic returns a made-up message from testdata/synthetic.
func synthetic(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "synthetic", name+".txt"))
	require.NoError(t, err)
	return b
}

// mustTestdata is transcript for goroutines that have no *testing.T to fail.
func mustTestdata(dir, name string) []byte {
	b, err := os.ReadFile(filepath.Join("testdata", dir, name+".txt"))
	if err != nil {
		panic(err)
	}
	return b
}

// hdrs builds an expected header list from name, value pairs.
func hdrs(kv ...string) eslHeaders {
	var hs eslHeaders
	for i := 0; i+1 < len(kv); i += 2 {
		hs = append(hs, eslHeader{name: kv[i], value: kv[i+1]})
	}
	return hs
}

// readOne parses b as exactly one message: nothing may be left over.
func readOne(t *testing.T, b []byte) *eslMessage {
	t.Helper()
	r := bufio.NewReader(bytes.NewReader(b))
	m, err := readESLMessage(r, 0)
	require.NoError(t, err)
	_, err = readESLMessage(r, 0)
	require.ErrorIs(t, err, io.EOF, "bytes left after the message")
	return m
}

const goodbye = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"

func TestReadESLMessageTranscripts(t *testing.T) {
	tests := []struct {
		file    string
		size    int // as the capture states
		headers eslHeaders
		body    string // checked when bodyLen is 0
		bodyLen int
	}{
		{file: "greeting", size: 28, headers: hdrs("Content-Type", "auth/request")},
		{file: "reply-auth-accepted", size: 54, headers: hdrs("Content-Type", "command/reply", "Reply-Text", "+OK accepted")},
		{file: "reply-auth-invalid", size: 54, headers: hdrs("Content-Type", "command/reply", "Reply-Text", "-ERR invalid")},
		{file: "reply-command-not-found", size: 64, headers: hdrs("Content-Type", "command/reply", "Reply-Text", "-ERR command not found")},
		{file: "reply-event-plain", size: 74, headers: hdrs("Content-Type", "command/reply", "Reply-Text", "+OK event listener enabled plain")},
		{file: "reply-event-json", size: 73, headers: hdrs("Content-Type", "command/reply", "Reply-Text", "+OK event listener enabled json")},
		{file: "reply-event-xml", size: 72, headers: hdrs("Content-Type", "command/reply", "Reply-Text", "+OK event listener enabled xml")},
		{file: "reply-noevents", size: 76, headers: hdrs("Content-Type", "command/reply", "Reply-Text", "+OK no longer listening for events")},
		{file: "reply-no-keywords", size: 67, headers: hdrs("Content-Type", "command/reply", "Reply-Text", "-ERR no keywords supplied")},
		{file: "reply-bye", size: 49, headers: hdrs("Content-Type", "command/reply", "Reply-Text", "+OK bye")},
		{file: "reply-bgapi", size: 139, headers: hdrs("Content-Type", "command/reply",
			"Reply-Text", "+OK Job-UUID: 40dacc7c-6466-4b04-afb3-8c28aeb6fa47",
			"Job-UUID", "40dacc7c-6466-4b04-afb3-8c28aeb6fa47")},
		{file: "disconnect-goodbye", size: 124, headers: hdrs("Content-Type", "text/disconnect-notice", "Content-Length", "67"), body: goodbye},
		{file: "disconnect-shutdown", size: 88, headers: hdrs("Content-Type", "text/disconnect-notice", "Content-Length", "31"), body: "The system is being shut down.\n"},
		{file: "api-show-calls-count-0", size: 57, headers: hdrs("Content-Type", "api/response", "Content-Length", "10"), body: "\n0 total.\n"},
		{file: "api-show-calls-count-3", size: 57, headers: hdrs("Content-Type", "api/response", "Content-Length", "10"), body: "\n3 total.\n"},
		{file: "api-show-calls-json", size: 64, headers: hdrs("Content-Type", "api/response", "Content-Length", "17"), body: "{\"row_count\": 0}\n"},
		{file: "api-false", size: 51, headers: hdrs("Content-Type", "api/response", "Content-Length", "5"), body: "false"},
		{file: "api-true", size: 50, headers: hdrs("Content-Type", "api/response", "Content-Length", "4"), body: "true"},
		{file: "api-ok", size: 50, headers: hdrs("Content-Type", "api/response", "Content-Length", "4"), body: "+OK\n"},
		{file: "api-max-sessions-1000", size: 70, headers: hdrs("Content-Type", "api/response", "Content-Length", "23"), body: "+OK max sessions: 1000\n"},
		{file: "api-max-sessions-3", size: 67, headers: hdrs("Content-Type", "api/response", "Content-Length", "20"), body: "+OK max sessions: 3\n"},
		{file: "api-nosuchcmd", size: 81, headers: hdrs("Content-Type", "api/response", "Content-Length", "34"), body: "-ERR nosuchcmd Command not found!\n"},
		{file: "api-status-idle", size: 386, headers: hdrs("Content-Type", "api/response", "Content-Length", "338"), bodyLen: 338},
		{file: "api-status-load", size: 384, headers: hdrs("Content-Type", "api/response", "Content-Length", "336"), bodyLen: 336},
		{file: "api-sofia-status", size: 436, headers: hdrs("Content-Type", "api/response", "Content-Length", "388"), bodyLen: 388},
		{file: "api-sofia-status-fs2", size: 436, headers: hdrs("Content-Type", "api/response", "Content-Length", "388"), bodyLen: 388},
		{file: "api-sofia-status-profile-lb", size: 1005, headers: hdrs("Content-Type", "api/response", "Content-Length", "957"), bodyLen: 957},
		// Events put Content-Length first.
		{file: "event-heartbeat-plain-idle", size: 922, headers: hdrs("Content-Length", "870", "Content-Type", "text/event-plain"), bodyLen: 870},
		{file: "event-heartbeat-plain-load", size: 918, headers: hdrs("Content-Length", "866", "Content-Type", "text/event-plain"), bodyLen: 866},
		{file: "event-heartbeat-json", size: 950, headers: hdrs("Content-Length", "899", "Content-Type", "text/event-json"), bodyLen: 899},
		{file: "event-heartbeat-xml", size: 1581, headers: hdrs("Content-Length", "1530", "Content-Type", "text/event-xml"), bodyLen: 1530},
		{file: "event-shutdown-requested-elegant", size: 536, headers: hdrs("Content-Length", "484", "Content-Type", "text/event-plain"), bodyLen: 484},
		{file: "event-shutdown-requested-asap", size: 533, headers: hdrs("Content-Length", "481", "Content-Type", "text/event-plain"), bodyLen: 481},
		{file: "event-background-job", size: 626, headers: hdrs("Content-Length", "574", "Content-Type", "text/event-plain"), bodyLen: 574},
		{file: "event-shutdown", size: 539, headers: hdrs("Content-Length", "487", "Content-Type", "text/event-plain"), bodyLen: 487},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			raw := transcript(t, tt.file)
			require.Len(t, raw, tt.size, "testdata is not the captured bytes")
			m := readOne(t, raw)
			assert.Equal(t, tt.headers, m.headers)
			if tt.bodyLen > 0 {
				assert.Len(t, m.body, tt.bodyLen)
				assert.Equal(t, raw[len(raw)-tt.bodyLen:], m.body)
			} else {
				assert.Equal(t, tt.body, string(m.body))
			}
		})
	}
}

// TestReadESLMessageSessions reads whole captured server streams, through
// readers that return one byte at a time and a minimal bufio buffer, so
// every line crosses buffer boundaries.
func TestReadESLMessageSessions(t *testing.T) {
	const (
		auth    = "auth/request"
		reply   = "command/reply"
		api     = "api/response"
		plain   = "text/event-plain"
		notice  = "text/disconnect-notice"
		evJSON  = "text/event-json"
		evXML   = "text/event-xml"
		session = "session-"
	)
	tests := []struct {
		file  string
		types []string
	}{
		{"session-a-server", []string{auth, reply, notice}},
		{"session-c-server", []string{auth, reply, reply, api, api, api, api, api, api, api, api, api, api,
			reply, plain, reply, evJSON, reply, evXML, reply, reply, reply, reply, reply, notice}},
		{"session-d-server", []string{auth, reply, reply, api, api, api, api, plain, api, reply, notice}},
		{"session-g-server", []string{reply, reply, plain, api, api, api, api, plain, api, api,
			reply, plain, api, api, api, api, plain, api, api, reply, notice}},
		{"session-i-server-a", []string{reply, plain, notice}},
	}
	for _, tt := range tests {
		for _, mode := range []string{"whole", "onebyte"} {
			t.Run(strings.TrimPrefix(tt.file, session)+"/"+mode, func(t *testing.T) {
				var src io.Reader = bytes.NewReader(transcript(t, tt.file))
				size := 4096
				if mode == "onebyte" {
					src, size = iotest.OneByteReader(src), 16
				}
				r := bufio.NewReaderSize(src, size)
				var got []string
				for {
					m, err := readESLMessage(r, 0)
					if errors.Is(err, io.EOF) {
						break
					}
					require.NoError(t, err)
					got = append(got, m.contentType())
				}
				assert.Equal(t, tt.types, got)
			})
		}
	}
}

func TestReadESLMessageEdgeCases(t *testing.T) {
	big := strings.Repeat("x", eslMaxHeaderBytes)
	tests := []struct {
		name    string
		in      string
		maxBody int
		headers eslHeaders
		body    string
		err     error
	}{
		{name: "crlf", in: "Content-Type: api/response\r\nContent-Length: 4\r\n\r\ntrue",
			headers: hdrs("Content-Type", "api/response", "Content-Length", "4"), body: "true"},
		{name: "leading blank lines", in: "\n\r\n\nContent-Type: auth/request\n\n", headers: hdrs("Content-Type", "auth/request")},
		{name: "url-decoded value", in: "Reply-Text: %2BOK%20a%3ab\n\n", headers: hdrs("Reply-Text", "+OK a:b")},
		{name: "plus and bad escapes stay", in: "A: +OK 100% %zz %4\n\n", headers: hdrs("A", "+OK 100% %zz %4")},
		{name: "blanks before value dropped", in: "A:   \tv w \n\n", headers: hdrs("A", "v w ")},
		{name: "no blank after colon", in: "A:v\n\n", headers: hdrs("A", "v")},
		{name: "empty value", in: "A:\n\n", headers: hdrs("A", "")},
		{name: "colon in value", in: "Reply-Text: +OK Job-UUID: x\n\n", headers: hdrs("Reply-Text", "+OK Job-UUID: x")},
		{name: "lower-case content-length", in: "content-length: 2\n\nab", headers: hdrs("content-length", "2"), body: "ab"},
		{name: "zero length", in: "Content-Length: 0\n\n", headers: hdrs("Content-Length", "0")},
		{name: "leading zeros", in: "Content-Length: 002\n\nab", headers: hdrs("Content-Length", "002"), body: "ab"},
		{name: "repeated equal length", in: "Content-Length: 1\nContent-Length: 1\n\na", headers: hdrs("Content-Length", "1", "Content-Length", "1"), body: "a"},
		{name: "large body", in: "Content-Length: 200000\n\n" + strings.Repeat("b", 200000),
			headers: hdrs("Content-Length", "200000"), body: strings.Repeat("b", 200000)},
		{name: "body at the limit", in: "Content-Length: 5\n\n12345", maxBody: 5, headers: hdrs("Content-Length", "5"), body: "12345"},

		{name: "empty stream", in: "", err: io.EOF},
		{name: "only blank lines", in: "\n\n\r\n", err: io.EOF},
		{name: "no colon", in: "HTTP/1.1 400 Bad Request\n\n", err: errESLBadHeader},
		{name: "empty name", in: ": v\n\n", err: errESLBadHeader},
		{name: "body over the limit", in: "Content-Length: 6\n\n123456", maxBody: 5, err: errESLBodyTooLarge},
		{name: "huge length", in: "Content-Length: 99999999999999999999999\n\n", err: errESLBodyTooLarge},
		{name: "negative length", in: "Content-Length: -1\n\n", err: errESLBadLength},
		{name: "signed length", in: "Content-Length: +1\n\nx", err: errESLBadLength},
		{name: "length with trailing blank", in: "Content-Length: 1 \n\nx", err: errESLBadLength},
		{name: "empty length", in: "Content-Length:\n\n", err: errESLBadLength},
		{name: "conflicting lengths", in: "Content-Length: 1\nContent-Length: 2\n\nab", err: errESLBadLength},
		{name: "header block too large", in: "A: " + big + "\n\n", err: errESLHeaderTooLarge},
		{name: "endless blank lines", in: strings.Repeat("\n", eslMaxHeaderBytes+1), err: errESLHeaderTooLarge},
		{name: "eof in header line", in: "Content-Type: auth/req", err: io.ErrUnexpectedEOF},
		{name: "eof before blank line", in: "Content-Type: auth/request\n", err: io.ErrUnexpectedEOF},
		{name: "eof in body", in: "Content-Length: 10\n\nabc", err: io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bufio.NewReaderSize(strings.NewReader(tt.in), 16)
			m, err := readESLMessage(r, tt.maxBody)
			if tt.err != nil {
				require.ErrorIs(t, err, tt.err)
				assert.Nil(t, m)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.headers, m.headers)
			assert.Equal(t, tt.body, string(m.body))
		})
	}
}

func TestESLURLDecode(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"plain", "plain"},
		{"fd00%3A%3A2", "fd00::2"},
		{"2026-11-26%2000%3A45%3A11", "2026-11-26 00:45:11"},
		{"%2b%2B", "++"},
		{"a+b", "a+b"},
		{"%", "%"},
		{"%4", "%4"},
		{"%4g", "%4g"},
		{"100%", "100%"},
		{"%%41", "%A"},
		{"%0A%0d", "\n\r"},
		{"%00", "\x00"},
		{"%FF", "\xff"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, eslURLDecode(tt.in), "decode %q", tt.in)
	}
}

func TestParseEventPlainHeartbeat(t *testing.T) {
	m := readOne(t, transcript(t, "event-heartbeat-plain-idle"))
	hs, err := parseEventPlain(m.body)
	require.NoError(t, err)
	// All 27 headers, in wire order, values URL-decoded.
	assert.Equal(t, hdrs(
		"Event-Name", "HEARTBEAT",
		"Core-UUID", "946f50a1-11a8-471f-b8ad-cddd1a26febc",
		"FreeSWITCH-Hostname", "vm",
		"FreeSWITCH-Switchname", "fs1",
		"FreeSWITCH-IPv4", "192.0.2.2",
		"FreeSWITCH-IPv6", "fd00::2",
		"Event-Date-Local", "2026-11-26 00:45:11",
		"Event-Date-GMT", "Thu, 26 Nov 2026 00:45:11 GMT",
		"Event-Date-Timestamp", "1795653911495062",
		"Event-Calling-File", "switch_core.c",
		"Event-Calling-Function", "send_heartbeat",
		"Event-Calling-Line-Number", "95",
		"Event-Sequence", "414",
		"Event-Info", "System Ready",
		"Up-Time", "0 years, 0 days, 0 hours, 0 minutes, 39 seconds, 514 milliseconds, 319 microseconds",
		"FreeSWITCH-Version", "1.11.0-release~64bit",
		"Uptime-msec", "39514",
		"Session-Count", "0",
		"Max-Sessions", "1000",
		"Session-Per-Sec", "200",
		"Session-Per-Sec-Last", "0",
		"Session-Per-Sec-Max", "0",
		"Session-Per-Sec-FiveMin", "0",
		"Session-Since-Startup", "0",
		"Session-Peak-Max", "0",
		"Session-Peak-FiveMin", "0",
		"Idle-CPU", "62.800000",
	), hs)
}

func TestParseEventPlainTranscripts(t *testing.T) {
	tests := []struct {
		file string
		want map[string]string // a selection of headers
		n    int               // header count, the _body pseudo-header included
	}{
		{"event-heartbeat-plain-load", map[string]string{
			"Event-Name": "HEARTBEAT", "Session-Count": "3", "Max-Sessions": "3", "Session-Per-Sec": "200",
			"Idle-CPU": "2.533333", "FreeSWITCH-Version": "1.11.0-release~64bit",
			"Up-Time": "0 years, 0 days, 0 hours, 1 minute, 59 seconds, 526 milliseconds, 247 microseconds",
		}, 27},
		{"event-shutdown-requested-elegant", map[string]string{"Event-Name": "SHUTDOWN_REQUESTED", "Event-Info": "elegant"}, 14},
		{"event-shutdown-requested-asap", map[string]string{"Event-Name": "SHUTDOWN_REQUESTED", "Event-Info": "ASAP"}, 14},
		{"event-shutdown", map[string]string{
			"Event-Name": "SHUTDOWN", "Event-Info": "System Shutting Down", "FreeSWITCH-Switchname": "fs2",
		}, 14},
		// An event with a body of its own: Content-Length is the last
		// header, the body follows the empty line.
		{"event-background-job", map[string]string{
			"Event-Name": "BACKGROUND_JOB", "Job-Command": "fsctl", "Job-Command-Arg": "shutdown elegant",
			"Content-Length": "4", "_body": "+OK\n",
		}, 18},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			m := readOne(t, transcript(t, tt.file))
			hs, err := parseEventPlain(m.body)
			require.NoError(t, err)
			assert.Len(t, hs, tt.n)
			for k, v := range tt.want {
				got, ok := hs.get(k)
				assert.True(t, ok, k)
				assert.Equal(t, v, got, k)
			}
		})
	}
}

func TestParseEventPlainSynthetic(t *testing.T) {
	for _, tt := range []struct{ file, name string }{
		{"event-channel-create", "CHANNEL_CREATE"},
		{"event-channel-hangup-complete", "CHANNEL_HANGUP_COMPLETE"},
	} {
		m := readOne(t, synthetic(t, tt.file))
		require.Equal(t, "text/event-plain", m.contentType())
		hs, err := parseEventPlain(m.body)
		require.NoError(t, err)
		assert.Equal(t, tt.name, hs.value("event-name"), "lookup ignores case")
		assert.Equal(t, "sofia/lb/sipp@127.0.0.1:5377", hs.value("Channel-Name"))
		v, ok := hs.get("variable_sip_user_agent")
		assert.True(t, ok)
		assert.Empty(t, v, "_undef_ is an empty value")
	}
}

func TestParseEventPlainEdgeCases(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want eslHeaders
		err  bool
	}{
		{name: "minimal", in: "Event-Name: X\n\n", want: hdrs("Event-Name", "X")},
		{name: "no closing blank line", in: "Event-Name: X\nA: b\n", want: hdrs("Event-Name", "X", "A", "b")},
		{name: "no final newline", in: "Event-Name: X\nA: b", want: hdrs("Event-Name", "X", "A", "b")},
		{name: "crlf", in: "Event-Name: X\r\nA: %20b\r\n\r\n", want: hdrs("Event-Name", "X", "A", " b")},
		{name: "leading blank lines", in: "\n\nEvent-Name: X\n\n", want: hdrs("Event-Name", "X")},
		{name: "undef", in: "Event-Name: X\nA: _undef_\nB: _undef_x\n\n", want: hdrs("Event-Name", "X", "A", "", "B", "_undef_x")},
		{name: "encoded undef is a value", in: "A: %5Fundef_\n\n", want: hdrs("A", "_undef_")},
		{name: "body", in: "Event-Name: X\nContent-Length: 3\n\nabc", want: hdrs("Event-Name", "X", "Content-Length", "3", "_body", "abc")},
		{name: "empty body", in: "Event-Name: X\nContent-Length: 0\n\n", want: hdrs("Event-Name", "X", "Content-Length", "0", "_body", "")},
		{name: "body with blank lines", in: "A: b\nContent-Length: 4\n\n\n\n\n\n", want: hdrs("A", "b", "Content-Length", "4", "_body", "\n\n\n\n")},

		{name: "empty", in: "", err: true},
		{name: "only blank lines", in: "\n\n", err: true},
		{name: "no colon", in: "Event-Name HEARTBEAT\n\n", err: true},
		{name: "trailing data", in: "Event-Name: X\n\ngarbage", err: true},
		{name: "body too short", in: "Event-Name: X\nContent-Length: 9\n\nabc", err: true},
		{name: "body too long", in: "Event-Name: X\nContent-Length: 1\n\nabc", err: true},
		{name: "bad body length", in: "Event-Name: X\nContent-Length: x\n\nabc", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs, err := parseEventPlain([]byte(tt.in))
			if tt.err {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, hs)
		})
	}
}

func TestParseStatus(t *testing.T) {
	body := func(file string) []byte { return readOne(t, transcript(t, file)).body }
	idle := body("api-status-idle")
	tests := []struct {
		name   string
		in     []byte
		want   statusFigures
		budget int64
		err    string
	}{
		{name: "idle (capture C)", in: idle, want: statusFigures{
			sessions: 0, sessionsPeak: 0, maxSessions: 1000, spsLast: 0, spsMax: 200, haveSPS: true,
			minIdleCPU: 0, idleCPU: 85.97, haveIdleCPU: true, ready: true, version: "1.11.0-release",
		}, budget: 200},
		{name: "three calls (capture D)", in: body("api-status-load"), want: statusFigures{
			sessions: 3, sessionsPeak: 3, maxSessions: 1000, spsLast: 1, spsMax: 200, haveSPS: true,
			minIdleCPU: 0, idleCPU: 2.27, haveIdleCPU: true, ready: true, version: "1.11.0-release",
		}, budget: 199},
		{name: "not ready", in: bytes.Replace(idle, []byte(") is ready"), []byte(") is not ready"), 1), want: statusFigures{
			maxSessions: 1000, spsMax: 200, haveSPS: true, idleCPU: 85.97, haveIdleCPU: true, version: "1.11.0-release",
		}, budget: 200},
		{name: "1.10 git build, no trailing blanks", in: []byte("UP 0 years, 80 days, 8 hours, 25 minutes, 5 seconds, 869 milliseconds, 87 microseconds\n" +
			"FreeSWITCH (Version 1.10.3-release git e52b1a8 2020-09-09 12:16:24Z 64bit) is ready\n" +
			"7653 session(s) since startup\n0 session(s) - peak 2, last 5min 0\n" +
			"0 session(s) per Sec out of max 30, peak 14, last 5min 0\n1000 session(s) max\n" +
			"min idle cpu 0.00/99.00\nCurrent Stack Size/Max 240K/8192K"), want: statusFigures{
			sessionsPeak: 2, maxSessions: 1000, spsMax: 30, haveSPS: true, idleCPU: 99, haveIdleCPU: true,
			ready: true, version: "1.10.3-release",
		}, budget: 30},
		{name: "optional lines missing or odd", in: []byte("FreeSWITCH (Version 1.11.0-release  64bit) is ready\n" +
			"7 session(s) - peak 9, last 5min 8 \nx session(s) per Sec out of max 200\n50 session(s) max\nmin idle cpu 0.00\n"),
			want: statusFigures{sessions: 7, sessionsPeak: 9, maxSessions: 50, ready: true, version: "1.11.0-release"}},
		{name: "idle cpu clamped", in: []byte("FreeSWITCH (Version 1 64bit) is ready\n1 session(s) - peak 1, last 5min 1\n2 session(s) max\nmin idle cpu 0.00/100.50\n"),
			want: statusFigures{sessions: 1, sessionsPeak: 1, maxSessions: 2, idleCPU: 100, haveIdleCPU: true, ready: true, version: "1"}},

		{name: "unknown command", in: []byte("-ERR status Command not found!\n"), err: "Command not found"},
		{name: "empty", in: nil, err: "no version line"},
		{name: "other reply", in: body("api-sofia-status"), err: "no version line"},
		{name: "odd readiness", in: []byte("FreeSWITCH (Version 1.11.0) is sleepy\n"), err: "readiness"},
		{name: "no session line", in: []byte("FreeSWITCH (Version 1.11.0) is ready\n1000 session(s) max\n"), err: "no session count line"},
		{name: "no max line", in: []byte("FreeSWITCH (Version 1.11.0) is ready\n0 session(s) - peak 0, last 5min 0\n"), err: "no max sessions line"},
		{name: "negative sessions", in: []byte("FreeSWITCH (Version 1.11.0) is ready\n-1 session(s) - peak 0, last 5min 0\n1 session(s) max\n"), err: "not a count"},
		{name: "huge max", in: []byte("FreeSWITCH (Version 1.11.0) is ready\n0 session(s) - peak 0\n99999999999999999999 session(s) max\n"), err: "not a count"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := parseStatus(tt.in)
			if tt.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, f)
			assert.Equal(t, tt.budget, f.sessionsPerSecBudget())
		})
	}
}

func TestParseSofiaStatus(t *testing.T) {
	body := func(file string) []byte { return readOne(t, transcript(t, file)).body }
	const head = "                     Name\t   Type\t                                      Data\tState\n" +
		"=================================================================================================\n"
	const foot = "=================================================================================================\n"
	tests := []struct {
		name           string
		in             []byte
		known, running bool
	}{
		{"capture C", body("api-sofia-status"), true, true},
		{"capture H (fs2)", body("api-sofia-status-fs2"), true, true},
		{"aliases, gateways and TLS", []byte(head +
			"                  lbalias\t  alias\t                                        lb\tALIASED\n" +
			"                       lb\tprofile\t              sip:mod_sofia@127.0.0.1:5080\tRUNNING (3)\n" +
			"                       lb\tprofile\t             sips:mod_sofia@127.0.0.1:5081\tRUNNING (3) (TLS)\n" +
			"             lb::carrier1\tgateway\t                    sip:carrier.example.com\tFAIL_WAIT (retry: 5s)\n" +
			"                 external\tprofile\t              sip:mod_sofia@192.0.2.2:5080\tRUNNING (0)\n" +
			foot + "2 profiles 1 alias\n"), true, true},
		{"a profile down", []byte(head +
			"                       lb\tprofile\t              sip:mod_sofia@127.0.0.1:5080\tRUNNING (0)\n" +
			"                 external\tprofile\t              sip:mod_sofia@192.0.2.2:5080\tDOWN (0)\n" +
			foot + "2 profiles 0 aliases\n"), true, false},
		{"no profile", []byte(head + foot + "0 profiles 0 aliases\n"), true, false},
		{"profile detail is not the table", body("api-sofia-status-profile-lb"), false, false},
		{"unknown command", []byte("-ERR sofia Command not found!\n"), false, false},
		{"empty", nil, false, false},
		{"row before the header", []byte("lb\tprofile\tsip:x\tRUNNING (0)\n"), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			known, running := parseSofiaStatus(tt.in)
			assert.Equal(t, tt.known, known, "known")
			assert.Equal(t, tt.running, running, "running")
		})
	}
}

func TestParseCallsCount(t *testing.T) {
	body := func(file string) []byte { return readOne(t, transcript(t, file)).body }
	tests := []struct {
		name string
		in   []byte
		want int64
		err  bool
	}{
		{name: "zero (capture C)", in: body("api-show-calls-count-0"), want: 0},
		{name: "three (capture F)", in: body("api-show-calls-count-3"), want: 3},
		{name: "json", in: body("api-show-calls-json"), err: true},
		{name: "unknown command", in: body("api-nosuchcmd"), err: true},
		{name: "negative", in: []byte("\n-1 total.\n"), err: true},
		{name: "empty", in: nil, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := parseCallsCount(tt.in)
			if tt.err {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, n)
		})
	}
}

func TestParseBoolReply(t *testing.T) {
	body := func(file string) []byte { return readOne(t, transcript(t, file)).body }
	v, err := parseBoolReply(body("api-true"))
	require.NoError(t, err)
	assert.True(t, v)
	v, err = parseBoolReply(body("api-false"))
	require.NoError(t, err)
	assert.False(t, v)
	_, err = parseBoolReply(body("api-nosuchcmd"))
	require.Error(t, err)
}
