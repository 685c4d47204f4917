package fsemu

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestEventSerializationMatchesTranscripts takes events captured from a
// real FreeSWITCH apart and serializes them again: the bytes, framing
// included, must be the same.
func TestEventSerializationMatchesTranscripts(t *testing.T) {
	for _, tc := range []struct {
		file   string
		format eventFormat
	}{
		{"heartbeat-plain", formatPlain},
		{"heartbeat-plain-load", formatPlain},
		{"heartbeat-json", formatJSON},
		{"heartbeat-xml", formatXML},
		{"background-job-plain", formatPlain},
		{"shutdown-plain", formatPlain},
		{"shutdown-requested-plain", formatPlain},
	} {
		t.Run(tc.file, func(t *testing.T) {
			m, parsed := transcriptEvent(t, tc.file)
			ev := &eslEvent{name: parsed.get("Event-Name"), body: parsed.body}
			for _, k := range parsed.keys {
				ev.add(k, parsed.values[k])
			}
			assert.Equal(t, m.raw, string(ev.wire(tc.format)))
		})
	}
}

// TestHeartbeatHeadersAsTranscript checks that a HEARTBEAT built by the
// node has the 27 headers of FreeSWITCH's, in the same order, and the same
// value shapes.
func TestHeartbeatHeadersAsTranscript(t *testing.T) {
	_, want := transcriptEvent(t, "heartbeat-plain")
	require.Len(t, want.keys, 27)

	n := startNode(t, Config{ID: "fs1", ESLAddr: "127.0.0.1:0", Hostname: "vm", IdleCPU: 62.8, SessionsPerSecond: 200})
	ev := n.esl.heartbeatEvent(414, time.Date(2026, 11, 26, 0, 45, 11, 495062000, time.Local))
	got := &parsedEvent{values: map[string]string{}}
	for _, h := range ev.headers {
		got.keys = append(got.keys, h.name)
		got.values[h.name] = h.value
	}
	assert.Equal(t, want.keys, got.keys)
	for _, k := range []string{"Event-Name", "FreeSWITCH-Hostname", "FreeSWITCH-Switchname", "Event-Date-Local",
		"Event-Calling-File", "Event-Calling-Function", "Event-Calling-Line-Number", "Event-Sequence", "Event-Info",
		"Max-Sessions", "Session-Per-Sec", "Session-Count", "Idle-CPU"} {
		assert.Equal(t, want.get(k), got.get(k), k)
	}
	assert.Equal(t, "1795653911495062", got.get("Event-Date-Timestamp"))
	assert.Regexp(t, `^\w{3}, 26 Nov 2026 \d\d:45:11 GMT$`, got.get("Event-Date-GMT"))
	assert.Equal(t, DefaultVersion, got.get("FreeSWITCH-Version"))
	assert.Regexp(t, `^0 years, 0 days, 0 hours, 0 minutes, \d+ seconds?, \d+ milliseconds?, \d+ microseconds?$`, got.get("Up-Time"))
	assert.Equal(t, n.core.uuid, got.get("Core-UUID"))
	assert.Regexp(t, `^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`, got.get("Core-UUID"))
}

func TestURLEncode(t *testing.T) {
	for in, want := range map[string]string{
		"":                           "",
		"System Ready":               "System%20Ready",
		"fd00::2":                    "fd00%3A%3A2",
		"2026-11-26 00:45:11":        "2026-11-26%2000%3A45%3A11",
		"Thu, 26 Nov 2026 GMT":       "Thu,%2026%20Nov%202026%20GMT",
		"1.11.0-release~64bit":       "1.11.0-release~64bit",
		"a@b;c=d&e?f#g+h<i>j":        "a%40b%3Bc%3Dd%26e%3Ff%23g%2Bh%3Ci%3Ej",
		"[x]\\^`{|}\"":               "%5Bx%5D%5C%5E%60%7B%7C%7D%22",
		"tab\there\r\n":              "tab%09here%0D%0A",
		"caf\u00e9\x7f":              "caf%C3%A9%7F",
		"already%20encoded":          "already%20encoded",
		"lower%2fhex stays %2f":      "lower%252fhex%20stays%20%252f",
		"trailing %4":                "trailing%20%254",
		"percent at end %":           "percent%20at%20end%20%25",
		"/path/with.dots-and_unders": "/path/with.dots-and_unders",
	} {
		assert.Equal(t, want, urlEncode(in), "%q", in)
	}
}

func TestJSONEscapingLikeCJSON(t *testing.T) {
	got := serializeJSON([]eslHeader{{"a", "q\"b\\s/<&>\n\t\x01é"}}, "body\n")
	assert.Equal(t, `{"a":"q\"b\\s/<&>\n\t\u0001é","Content-Length":"5","_body":"body\n"}`, got)
}

func TestFormatUptime(t *testing.T) {
	d := 400*24*time.Hour + time.Hour + time.Minute + 2*time.Second + time.Millisecond + 7*time.Microsecond
	assert.Equal(t, "1 year, 35 days, 1 hour, 1 minute, 2 seconds, 1 millisecond, 7 microseconds", formatUptime(d))
	assert.Equal(t, "0 years, 0 days, 0 hours, 0 minutes, 0 seconds, 0 milliseconds, 0 microseconds", formatUptime(0))
}

// TestSessionFigures drives the per-second and 5-minute bookkeeping with a
// moved start time instead of waiting.
func TestSessionFigures(t *testing.T) {
	var active int64
	c := newCore(Config{SessionsPerSecond: 30, IdleCPU: 95}.withDefaults(), func() int64 { return active })
	f := c.figures(0)
	assert.Equal(t, int64(1000), f.maxSessions, "unlimited shows FreeSWITCH's default")
	assert.Equal(t, int64(30), f.spsRemaining)

	for i := 0; i < 3; i++ {
		active++
		c.sessionCreated(active)
	}
	f = c.figures(5)
	assert.Equal(t, int64(5), f.maxSessions)
	assert.Equal(t, int64(27), f.spsRemaining, "budget left this second")
	assert.Equal(t, int64(3), f.total)
	assert.Equal(t, int64(3), f.peak)

	// One second later: the 3 are the last second's; the budget is back.
	c.mu.Lock()
	c.started = c.started.Add(-time.Second)
	c.mu.Unlock()
	active = 1
	f = c.figures(0)
	assert.Equal(t, int64(30), f.spsRemaining)
	assert.Equal(t, int64(3), f.spsLast)
	assert.Equal(t, int64(3), f.spsPeak)
	assert.Equal(t, int64(3), f.spsPeak5)
	assert.Equal(t, int64(1), f.sessions)

	// Six minutes later: a new 5-minute window.
	c.mu.Lock()
	c.started = c.started.Add(-6 * time.Minute)
	c.mu.Unlock()
	f = c.figures(0)
	assert.Equal(t, int64(0), f.spsLast)
	assert.Equal(t, int64(3), f.spsPeak)
	assert.Equal(t, int64(0), f.spsPeak5)
	assert.Equal(t, int64(3), f.peak)
	assert.Equal(t, int64(1), f.peak5, "the window starts from the current count")
}
