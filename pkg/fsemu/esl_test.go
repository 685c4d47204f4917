package fsemu

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startESLNode starts a node with an Event Socket on a free port.
func startESLNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	cfg.ESLAddr = "127.0.0.1:0"
	return startNode(t, cfg)
}

func TestESLDisabledAndListenError(t *testing.T) {
	plain := startNode(t, Config{})
	assert.Empty(t, plain.ESLAddr())
	assert.Equal(t, 0, plain.ESLConnections())

	n := startESLNode(t, Config{})
	_, err := Start(t.Context(), Config{ESLAddr: n.ESLAddr()})
	require.ErrorContains(t, err, "listen esl")

	// The SIP port is taken: the ESL port bound first is let go again.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	eslAddr := l.Addr().String()
	require.NoError(t, l.Close())
	_, err = Start(t.Context(), Config{ESLAddr: eslAddr, Listen: n.Addr()})
	require.Error(t, err)
	startNode(t, Config{ESLAddr: eslAddr})
}

// Session A of the transcripts: a wrong password.
func TestESLBadPassword(t *testing.T) {
	n := startESLNode(t, Config{})
	c := dialESL(t, n)
	require.Equal(t, wireGreeting, c.next().raw)
	c.send("auth wrong\n\n")
	require.Equal(t, wireInvalid, c.next().raw)
	require.Equal(t, wireGoodbye, c.next().raw)
	c.expectEOF()
}

// Session B: commands before auth are refused, the connection stays.
func TestESLCommandBeforeAuth(t *testing.T) {
	n := startESLNode(t, Config{})
	c := dialESL(t, n)
	require.Equal(t, wireGreeting, c.next().raw)
	c.send("api status\n\n")
	require.Equal(t, wireNotFound, c.next().raw)
	c.send("event plain HEARTBEAT\n\n")
	require.Equal(t, wireNotFound, c.next().raw)
	c.send("auth ClueCon\n\n")
	require.Equal(t, wireAccepted, c.next().raw)
	c.send("exit\n\n")
	require.Equal(t, wireBye, c.next().raw)
	require.Equal(t, wireGoodbye, c.next().raw)
	c.expectEOF()
}

func TestESLExitBeforeAuthAndPassword(t *testing.T) {
	n := startESLNode(t, Config{ESLPassword: "s3cret"})
	c := dialESL(t, n)
	require.Equal(t, wireGreeting, c.next().raw)
	c.send("...\n\n")
	require.Equal(t, wireBye, c.next().raw)
	require.Equal(t, wireGoodbye, c.next().raw)
	c.expectEOF()

	c = dialESL(t, n)
	require.Equal(t, wireGreeting, c.next().raw)
	c.send("auth ClueCon\n\n")
	require.Equal(t, wireInvalid, c.next().raw)
	require.Equal(t, wireGoodbye, c.next().raw)
	c.expectEOF()

	c = dialESL(t, n)
	require.Equal(t, wireGreeting, c.next().raw)
	c.send("auth s3cret\n\n")
	require.Equal(t, wireAccepted, c.next().raw)
}

var statusRe = regexp.MustCompile(`^UP 0 years, 0 days, 0 hours, 0 minutes, \d+ seconds?, \d+ milliseconds?, \d+ microseconds?\n` +
	`FreeSWITCH \(Version 1\.10\.12-release  64bit\) is (ready|not ready)\n` +
	`(\d+) session\(s\) since startup\n` +
	`(\d+) session\(s\) - peak (\d+), last 5min (\d+) \n` +
	`(\d+) session\(s\) per Sec out of max 30, peak (\d+), last 5min (\d+) \n` +
	`(\d+) session\(s\) max\n` +
	`min idle cpu 0\.00/95\.00\n` +
	`Current Stack Size/Max 240K/8192K\n$`)

// Session C and the pause path: api answers, and fsctl pause changes what
// SIP sees, as Node.Pause does.
func TestESLAPIAndPause(t *testing.T) {
	n := startESLNode(t, Config{})
	p := newPhone(t, n, "UDP")
	c := dialESL(t, n)
	c.login()
	c.send("event plain HEARTBEAT\n\n")
	require.Equal(t, wirePlainOK, c.next().raw)

	c.send("api show calls count\n\n")
	c.expect(wireZeroCalls)
	c.send("api show channels count\n\n")
	c.expect(wireZeroCalls)
	c.send("api show calls as json\n\n")
	c.expect(wireZeroRowsJSON)
	c.send("api fsctl pause_check\n\n")
	c.expect(wireFalse)
	c.send("api fsctl ready_check\n\n")
	c.expect(wireTrue)
	c.send("api fsctl shutdown_check\n\n")
	c.expect(wireFalse)
	c.send("api fsctl max_sessions\n\n")
	c.expect(wireMax1000)

	m := statusRe.FindStringSubmatch(c.api("status"))
	require.NotNil(t, m)
	assert.Equal(t, []string{"ready", "0", "0", "0", "0", "0", "0", "0", "1000"}, m[1:])

	// fsctl pause: the state Node.Pause sets.
	c.send("api fsctl pause\n\n")
	c.expect(wireAPIOK)
	assert.True(t, n.Paused())
	c.send("api fsctl pause_check\n\n")
	c.expect(wireTrue)
	c.send("api fsctl ready_check\n\n")
	c.expect(wireFalse)
	m = statusRe.FindStringSubmatch(c.api("status"))
	require.NotNil(t, m)
	assert.Equal(t, "not ready", m[1])
	_, rs := p.call()
	requireMaxCalls(t, rs[len(rs)-1])
	assert.Equal(t, []int{503}, statuses(rs), "no 100 Trying")
	requireMaxCalls(t, p.options())

	c.send("api fsctl resume\n\n")
	c.expect(wireAPIOK)
	assert.False(t, n.Paused())
	assert.Equal(t, 200, p.options().StatusCode)

	// Pausing inbound only is enough for SIP, not for "not ready".
	c.send("api fsctl pause inbound\n\n")
	c.expect(wireAPIOK)
	assert.Equal(t, "false", c.api("fsctl pause_check"))
	assert.Equal(t, "true", c.api("fsctl pause_check inbound"))
	assert.Equal(t, "true", c.api("fsctl ready_check"))
	requireMaxCalls(t, p.options())
	c.send("api fsctl resume inbound\n\n")
	c.expect(wireAPIOK)
	c.send("api fsctl pause outbound\n\n")
	c.expect(wireAPIOK)
	assert.Equal(t, "true", c.api("fsctl pause_check outbound"))
	assert.Equal(t, 200, p.options().StatusCode, "outbound pause leaves SIP alone")

	// Node.Pause is visible over ESL too.
	n.Pause()
	c.send("api fsctl pause_check\n\n")
	c.expect(wireTrue)
	n.Resume()
	c.send("api fsctl pause_check\n\n")
	c.expect(wireFalse)

	// A call in progress is counted everywhere.
	inv, rs := p.call()
	ok := rs[len(rs)-1]
	require.Equal(t, 200, ok.StatusCode)
	p.ack(inv, ok)
	assert.Equal(t, "\n1 total.\n", c.api("show calls count"))
	assert.Equal(t, "\n1 total.\n", c.api("show channels count"))
	m = statusRe.FindStringSubmatch(c.api("status"))
	require.NotNil(t, m)
	assert.Equal(t, []string{"ready", "1", "1", "1", "1"}, m[1:6])
	var rows struct {
		RowCount int                 `json:"row_count"`
		Rows     []map[string]string `json:"rows"`
	}
	require.NoError(t, json.Unmarshal([]byte(c.api("show calls as json")), &rows))
	require.Equal(t, 1, rows.RowCount)
	assert.Equal(t, "inbound", rows.Rows[0]["direction"])
	assert.Equal(t, "caller", rows.Rows[0]["cid_num"])
	assert.Equal(t, "1000", rows.Rows[0]["dest"])
	assert.Equal(t, "ACTIVE", rows.Rows[0]["callstate"])
	_, bye := p.request(sip.BYE, inv, ok)
	require.Equal(t, 200, bye.StatusCode)
	c.send("api show calls count\n\n")
	c.expect(wireZeroCalls)
}

func TestESLMaxSessions(t *testing.T) {
	n := startESLNode(t, Config{})
	c := dialESL(t, n)
	c.login()
	c.send("api fsctl max_sessions 3\n\n")
	c.expect(wireMax3)
	assert.Equal(t, 3, n.MaxSessions())
	c.send("api fsctl max_sessions\n\n")
	c.expect(wireMax3)
	n.SetMaxSessions(0)
	c.send("api fsctl max_sessions 0\n\n")
	c.expect(wireMax1000)
	assert.Equal(t, 0, n.MaxSessions(), "0 only reads")

	// At the cap, INVITE and OPTIONS get 503 (1.11.0 behaviour).
	n.SetMaxSessions(1)
	n.SetAnswerDelay(time.Hour)
	p := newPhone(t, n, "UDP")
	waitRinging(t, p.send(p.invite(), p.withVia))
	requireMaxCalls(t, p.options())
	assert.Equal(t, "+OK max sessions: 1\n", c.api("fsctl max_sessions"))
}

// Session F plus pipelining: CRLF line ends, leading blank lines, several
// commands in one write, a command with a Content-Length body.
func TestESLFraming(t *testing.T) {
	n := startESLNode(t, Config{})
	c := dialESL(t, n)
	require.Equal(t, wireGreeting, c.next().raw)
	c.send("auth ClueCon\r\n\r\n")
	require.Equal(t, wireAccepted, c.next().raw)
	c.send("api show calls count\r\n\r\n")
	c.expect(wireZeroCalls)

	c.send("\n\r\nevent plain HEARTBEAT\n\napi fsctl pause_check\n\nsendevent CUSTOM\nContent-Length: 9\n\nx\n\ny\n\nz\nfrobnicate\r\n\r\napi nosuchcmd\n\n")
	c.expect(wirePlainOK)
	c.expect(wireFalse)
	c.expect(wireNotFound) // sendevent: its body was read and skipped
	c.expect(wireNotFound) // frobnicate
	c.expect(wireNoSuchCmd)

	// A command split over several writes.
	c.send("api show ")
	c.send("calls count\n")
	c.send("\n")
	c.expect(wireZeroCalls)

	c.send("exit\n\n")
	c.expect(wireBye)
	c.expect(wireGoodbye)
	c.expectEOF()
}

// The event command family (transcripts C and D).
func TestESLSubscriptions(t *testing.T) {
	n := startESLNode(t, Config{})
	c := dialESL(t, n)
	c.login()
	c.subscribe("plain", wireNoKeywords)
	c.subscribe("plain NO_SUCH_EVENT", wireNoKeywords)
	c.subscribe("json HEARTBEAT", wireJSONOK)
	c.subscribe("xml heartbeat", wireXMLOK)
	c.subscribe("HEARTBEAT", wireXMLOK) // the format stays
	c.subscribe("plain ALL", wirePlainOK)
	c.subscribe("plain SWITCH_EVENT_HEARTBEAT CUSTOM sofia::register", wirePlainOK)
	c.send("nixevent HEARTBEAT\n\n")
	c.expect("Content-Type: command/reply\nReply-Text: +OK events nixed\n\n")
	c.send("nixevent NOPE\n\n")
	c.expect(wireNoKeywords)
	c.send("noevents\n\n")
	c.expect(wireNoEvents)
	c.send("filter Event-Name HEARTBEAT\n\n")
	c.expect("Content-Type: command/reply\nReply-Text: +OK filter added. [Event-Name]=[HEARTBEAT]\n\n")
	c.send("filter delete Event-Name HEARTBEAT\n\n")
	c.expect("Content-Type: command/reply\nReply-Text: +OK filter deleted. [Event-Name]=[HEARTBEAT]\n\n")
	c.send("filter nothing\n\n")
	c.expect("Content-Type: command/reply\nReply-Text: -ERR invalid syntax\n\n")
	c.send("log info\n\n")
	c.expect("Content-Type: command/reply\nReply-Text: +OK log level info [6]\n\n")
	c.send("nolog\n\n")
	c.expect("Content-Type: command/reply\nReply-Text: +OK no longer logging\n\n")
	c.send("auth ClueCon\n\n")
	c.expect(wireNotFound) // auth once only
}

// TestESLHeartbeat receives HEARTBEATs and checks them against the
// transcript's: header order, URL-encoding, live figures.
func TestESLHeartbeat(t *testing.T) {
	n := startESLNode(t, Config{ID: "fs1", HeartbeatInterval: 100 * time.Millisecond, SessionsPerSecond: 200})
	_, want := transcriptEvent(t, "heartbeat-plain")
	c := dialESL(t, n)
	c.login()
	c.subscribe("plain HEARTBEAT", wirePlainOK)

	m, hb := c.nextEvent("HEARTBEAT")
	assert.True(t, strings.HasPrefix(m.raw, fmt.Sprintf("Content-Length: %d\nContent-Type: text/event-plain\n\nEvent-Name: HEARTBEAT\n", len(m.body))), m.raw)
	assert.True(t, strings.HasSuffix(m.raw, "\n\n"))
	assert.Equal(t, want.keys, hb.keys, "the 27 headers in FreeSWITCH's order")
	assert.NotContains(t, m.raw, "\r")
	assert.Equal(t, "fs1", hb.get("FreeSWITCH-Switchname"))
	assert.Equal(t, "127.0.0.1", hb.get("FreeSWITCH-IPv4"))
	assert.Equal(t, "%3A%3A1", hb.rawVals["FreeSWITCH-IPv6"])
	assert.Regexp(t, `^\d{4}-\d\d-\d\d%20\d\d%3A\d\d%3A\d\d$`, hb.rawVals["Event-Date-Local"])
	assert.Regexp(t, `^\w{3},%20\d\d%20\w{3}%20\d{4}%20\d\d%3A\d\d%3A\d\d%20GMT$`, hb.rawVals["Event-Date-GMT"])
	assert.Regexp(t, `^\d{16}$`, hb.get("Event-Date-Timestamp"))
	assert.Equal(t, "System%20Ready", hb.rawVals["Event-Info"])
	assert.Regexp(t, `^0%20years,%200%20days,%200%20hours,%200%20minutes,%20\d+%20seconds?,%20\d+%20milliseconds?,%20\d+%20microseconds?$`, hb.rawVals["Up-Time"])
	assert.Equal(t, DefaultVersion, hb.get("FreeSWITCH-Version"))
	assert.Equal(t, "0", hb.get("Session-Count"))
	assert.Equal(t, "1000", hb.get("Max-Sessions"))
	assert.Equal(t, "200", hb.get("Session-Per-Sec"))
	assert.Equal(t, "95.000000", hb.get("Idle-CPU"))
	assert.NotEqual(t, "1", hb.get("Event-Sequence"), "the first HEARTBEAT fired before anyone could subscribe")

	// Live figures: a call up, a session cap, another idle CPU.
	p := newPhone(t, n, "UDP")
	inv, rs := p.call()
	ok := rs[len(rs)-1]
	p.ack(inv, ok)
	n.SetMaxSessions(50)
	n.SetIdleCPU(12.5)
	var seq string
	for {
		_, hb = c.nextEvent("HEARTBEAT")
		if hb.get("Session-Count") == "1" && hb.get("Max-Sessions") == "50" && hb.get("Idle-CPU") == "12.500000" {
			break
		}
		seq = hb.get("Event-Sequence")
	}
	assert.Equal(t, "1", hb.get("Session-Since-Startup"))
	assert.Equal(t, "1", hb.get("Session-Peak-Max"))
	assert.Equal(t, "1", hb.get("Session-Peak-FiveMin"))
	if seq != "" {
		assert.Greater(t, atoi(t, hb.get("Event-Sequence")), atoi(t, seq))
	}
	_, bye := p.request(sip.BYE, inv, ok)
	require.Equal(t, 200, bye.StatusCode)
	for {
		if _, hb = c.nextEvent("HEARTBEAT"); hb.get("Session-Count") == "0" {
			break
		}
	}
	assert.Equal(t, "1", hb.get("Session-Peak-Max"))

	// JSON: same headers, values not encoded, no trailing newline.
	c.subscribe("json HEARTBEAT", wireJSONOK)
	m, hb = c.nextEvent("HEARTBEAT")
	assert.Equal(t, "text/event-json", m.contentType())
	assert.Equal(t, want.keys, hb.keys)
	assert.True(t, strings.HasSuffix(m.body, `"}`), m.body)
	assert.Regexp(t, `^0 years, `, hb.get("Up-Time"))
	assert.Contains(t, m.body, `"FreeSWITCH-IPv6":"::1"`)
	assert.Contains(t, m.body, `"Session-Count":"0"`)

	c.subscribe("xml HEARTBEAT", wireXMLOK)
	m, hb = c.nextEvent("HEARTBEAT")
	assert.Equal(t, "text/event-xml", m.contentType())
	assert.Equal(t, want.keys, hb.keys)
	assert.True(t, strings.HasPrefix(m.body, "<event>\n  <headers>\n    <Event-Name>HEARTBEAT</Event-Name>\n"))
	assert.True(t, strings.HasSuffix(m.body, "  </headers>\n</event>\n"))
	assert.Contains(t, m.body, "<FreeSWITCH-IPv6>%3A%3A1</FreeSWITCH-IPv6>")
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	var v int
	_, err := fmt.Sscan(s, &v)
	require.NoError(t, err)
	return v
}

// TestESLChannelEvents places calls over SIP and follows their channel
// events: one CHANNEL_CREATE per admitted call, none for a rejected one,
// CHANNEL_HANGUP_COMPLETE with the cause of the end.
func TestESLChannelEvents(t *testing.T) {
	n := startESLNode(t, Config{})
	p := newPhone(t, n, "UDP")
	c := dialESL(t, n)
	c.login()
	c.subscribe("plain CHANNEL_CREATE CHANNEL_HANGUP_COMPLETE", wirePlainOK)

	// Rejected: no channel. The next CHANNEL_CREATE is the next call's.
	n.Pause()
	_, rs := p.call()
	requireMaxCalls(t, rs[len(rs)-1])
	n.Resume()

	inv, rs := p.call()
	ok := rs[len(rs)-1]
	require.Equal(t, 200, ok.StatusCode)
	p.ack(inv, ok)
	m, ev := c.nextEvent("CHANNEL_CREATE")
	callID := inv.CallID().Value()
	assert.Equal(t, callID, ev.get("variable_sip_call_id"))
	assert.Equal(t, strings.ReplaceAll(callID, "@", "%40"), ev.rawVals["variable_sip_call_id"], "URL-encoded")
	assert.Equal(t, "inbound", ev.get("Call-Direction"))
	assert.Equal(t, "caller", ev.get("Caller-Caller-ID-Number"))
	assert.Equal(t, "Caller", ev.get("Caller-Caller-ID-Name"))
	assert.Equal(t, "1000", ev.get("Caller-Destination-Number"))
	assert.Equal(t, "127.0.0.1", ev.get("Caller-Network-Addr"))
	assert.Equal(t, "CS_INIT", ev.get("Channel-State"))
	assert.Equal(t, "sofia/external/caller@127.0.0.1", ev.get("Channel-Name"))
	uuid := ev.get("Unique-ID")
	assert.Regexp(t, `^[0-9a-f-]{36}$`, uuid)
	assert.Equal(t, []string{"Event-Name", "Core-UUID", "FreeSWITCH-Hostname", "FreeSWITCH-Switchname", "FreeSWITCH-IPv4",
		"FreeSWITCH-IPv6", "Event-Date-Local", "Event-Date-GMT", "Event-Date-Timestamp", "Event-Calling-File",
		"Event-Calling-Function", "Event-Calling-Line-Number", "Event-Sequence"}, ev.keys[:13])
	assert.NotContains(t, m.raw, "\r")
	assert.Equal(t, "\n1 total.\n", c.api("show calls count"))

	_, bye := p.request(sip.BYE, inv, ok)
	require.Equal(t, 200, bye.StatusCode)
	_, ev = c.nextEvent("CHANNEL_HANGUP_COMPLETE")
	assert.Equal(t, uuid, ev.get("Unique-ID"))
	assert.Equal(t, callID, ev.get("variable_sip_call_id"))
	assert.Equal(t, "NORMAL_CLEARING", ev.get("Hangup-Cause"))
	assert.Equal(t, "recv_bye", ev.get("variable_sip_hangup_disposition"))
	assert.NotEqual(t, "0", ev.get("Caller-Channel-Answered-Time"))

	// CANCEL while ringing.
	n.SetAnswerDelay(time.Hour)
	inv = p.invite()
	tx := p.send(inv, p.withVia)
	waitRinging(t, tx)
	_, ev = c.nextEvent("CHANNEL_CREATE")
	assert.Equal(t, inv.CallID().Value(), ev.get("variable_sip_call_id"))
	assert.Equal(t, 200, p.cancel(inv).StatusCode)
	_, ev = c.nextEvent("CHANNEL_HANGUP_COMPLETE")
	assert.Equal(t, inv.CallID().Value(), ev.get("variable_sip_call_id"))
	assert.Equal(t, "ORIGINATOR_CANCEL", ev.get("Hangup-Cause"))
	assert.Equal(t, "0", ev.get("Caller-Channel-Answered-Time"))
}

// TestESLChannelEventsJSON: `event json` switches events already
// subscribed in plain to JSON.
func TestESLChannelEventsJSON(t *testing.T) {
	n := startESLNode(t, Config{})
	p := newPhone(t, n, "TCP")
	c := dialESL(t, n)
	c.login()
	c.subscribe("plain CHANNEL_CREATE", wirePlainOK)
	c.subscribe("json CHANNEL_HANGUP_COMPLETE", wireJSONOK)
	inv, rs := p.call()
	ok := rs[len(rs)-1]
	p.ack(inv, ok)
	m, ev := c.nextEvent("CHANNEL_CREATE")
	assert.Equal(t, "text/event-json", m.contentType())
	assert.Equal(t, inv.CallID().Value(), ev.get("variable_sip_call_id"))
	var flat map[string]string
	require.NoError(t, json.Unmarshal([]byte(m.body), &flat), "a flat object of strings")
	assert.False(t, strings.HasSuffix(m.body, "\n"))
	p.request(sip.BYE, inv, ok)
	_, ev = c.nextEvent("CHANNEL_HANGUP_COMPLETE")
	assert.Equal(t, "NORMAL_CLEARING", ev.get("Hangup-Cause"))
}

// Session C's unknown commands and event errors.
func TestESLUnknownCommands(t *testing.T) {
	n := startESLNode(t, Config{})
	c := dialESL(t, n)
	c.login()
	c.send("api nosuchcmd\n\n")
	c.expect(wireNoSuchCmd)
	c.send("api nosuchcmd with args\n\n")
	c.expect("Content-Type: api/response\nContent-Length: 34\n\n-ERR nosuchcmd Command not found!\n")
	c.send("frobnicate\n\n")
	c.expect(wireNotFound)
	c.send("exit\n\n")
	c.expect(wireBye)
	c.expect(wireGoodbye)
	c.expectEOF()
}

func TestESLSofiaStatusAndProfile(t *testing.T) {
	n := startESLNode(t, Config{OptionsAlways200: false})
	c := dialESL(t, n)
	c.login()
	const line = "================================================================================================="
	table := func(state string) string {
		return fmt.Sprintf("%25s\t%s\t  %40s\t%s\n%s\n%25s\t%s\t  %40s\t%s\n%s\n1 profile 0 aliases\n",
			"Name", "   Type", "Data", "State", line, "external", "profile", "sip:mod_sofia@"+n.Addr(), state, line)
	}
	assert.Equal(t, table("RUNNING (0)"), c.api("sofia status"))

	p := newPhone(t, n, "UDP")
	n.SetProfileRunning(false)
	assert.False(t, n.ProfileRunning())
	assert.Equal(t, table("DOWN (0)"), c.api("sofia status"))
	_, rs := p.call()
	requireMaxCalls(t, rs[len(rs)-1])
	requireMaxCalls(t, p.options())
	n.SetOptionsAlways200(true)
	assert.Equal(t, 200, p.options().StatusCode)

	n.SetProfileRunning(true)
	n.SetAnswerDelay(time.Hour)
	waitRinging(t, p.send(p.invite(), p.withVia))
	assert.Equal(t, table("RUNNING (1)"), c.api("sofia status"))

	assert.Equal(t, "FreeSWITCH Version 1.10.12-release~64bit ( 64bit)\n", c.api("version"))
	assert.Regexp(t, `^\d+\n$`, c.api("uptime"))
	assert.Equal(t, n.cfg.Hostname, c.api("hostname"))
}

// TestESLBackgroundJob: bgapi answers with a Job-UUID at once and the
// output comes as BACKGROUND_JOB (Session G's shape).
func TestESLBackgroundJob(t *testing.T) {
	n := startESLNode(t, Config{})
	c := dialESL(t, n)
	c.login()
	c.subscribe("plain BACKGROUND_JOB", wirePlainOK)
	c.send("bgapi show calls count\n\n")
	r := c.nextReply()
	match := regexp.MustCompile(`^Content-Type: command/reply\nReply-Text: \+OK Job-UUID: ([0-9a-f-]{36})\nJob-UUID: ([0-9a-f-]{36})\n\n$`).FindStringSubmatch(r.raw)
	require.NotNil(t, match, r.raw)
	require.Equal(t, match[1], match[2])

	m, ev := c.nextEvent("BACKGROUND_JOB")
	assert.Equal(t, match[1], ev.get("Job-UUID"))
	assert.Equal(t, "show", ev.get("Job-Command"))
	assert.Equal(t, "calls%20count", ev.rawVals["Job-Command-Arg"])
	assert.Equal(t, "\n0 total.\n", ev.body)
	assert.True(t, strings.HasSuffix(m.raw, "\nJob-Command-Arg: calls%20count\nContent-Length: 10\n\n\n0 total.\n"), m.raw)
	_, want := transcriptEvent(t, "background-job-plain")
	assert.Equal(t, want.keys, ev.keys)

	// A Job-UUID of the client's choosing; a command without argument.
	c.send("bgapi status\nJob-UUID: my-job\n\n")
	c.expect("Content-Type: command/reply\nReply-Text: +OK Job-UUID: my-job\nJob-UUID: my-job\n\n")
	_, ev = c.nextEvent("BACKGROUND_JOB")
	assert.Equal(t, "my-job", ev.get("Job-UUID"))
	assert.NotContains(t, ev.keys, "Job-Command-Arg")
	assert.Regexp(t, statusRe, ev.body)

	c.send("bgapi nosuchcmd\n\n")
	c.nextReply()
	_, ev = c.nextEvent("BACKGROUND_JOB")
	assert.Equal(t, "-ERR nosuchcmd Command not found!\n", ev.body)
}

// Session E with a short timeout: no auth, goodbye.
func TestESLAuthTimeout(t *testing.T) {
	n := startESLNode(t, Config{ESLAuthTimeout: 150 * time.Millisecond, HeartbeatInterval: 50 * time.Millisecond})
	c := dialESL(t, n)
	start := time.Now()
	require.Equal(t, wireGreeting, c.next().raw)
	require.Equal(t, wireGoodbye, c.next().raw)
	c.expectEOF()
	assert.GreaterOrEqual(t, time.Since(start), 100*time.Millisecond)

	// Authenticated connections have no timeout: still there after
	// several heartbeats.
	c = dialESL(t, n)
	c.login()
	c.subscribe("plain HEARTBEAT", wirePlainOK)
	start = time.Now()
	for time.Since(start) < 300*time.Millisecond {
		c.nextEvent("HEARTBEAT")
	}
	c.send("api show calls count\n\n")
	c.expect(wireZeroCalls)
}

// Sessions I: Close tells every client, subscribed ones get SHUTDOWN
// first, and the listener is gone.
func TestESLCloseNotifiesAndRefuses(t *testing.T) {
	n, err := Start(t.Context(), Config{Logger: testLogger(), ESLAddr: "127.0.0.1:0"})
	require.NoError(t, err)
	t.Cleanup(func() { n.Close() })
	addr := n.ESLAddr()

	a := dialESL(t, n)
	a.login()
	a.subscribe("plain SHUTDOWN HEARTBEAT", wirePlainOK)
	b := dialESL(t, n)
	b.login()
	pre := dialESL(t, n) // not authenticated
	require.Equal(t, wireGreeting, pre.next().raw)
	eventually(t, func() bool { return n.ESLConnections() == 3 }, "3 connections")

	require.NoError(t, n.Close())

	m, ev := a.nextEvent("SHUTDOWN")
	_, want := transcriptEvent(t, "shutdown-plain")
	assert.Equal(t, want.keys, ev.keys)
	assert.Equal(t, "System%20Shutting%20Down", ev.rawVals["Event-Info"])
	assert.True(t, strings.HasPrefix(m.raw, "Content-Length: "))
	require.Equal(t, wireShutdown, a.next().raw)
	a.expectEOF()
	b.expect(wireShutdown)
	b.expectEOF()
	require.Equal(t, wireShutdown, pre.next().raw)
	pre.expectEOF()

	_, err = net.DialTimeout("tcp", addr, waitFor)
	require.Error(t, err, "connections are refused")
	assert.Equal(t, 0, n.ESLConnections())
	requireNoNodeGoroutines(t)
}

// Session I again, through `api fsctl shutdown`: the asker gets +OK, then
// the notice; the SIP side stops too.
func TestESLFsctlShutdown(t *testing.T) {
	n, err := Start(t.Context(), Config{Logger: testLogger(), ESLAddr: "127.0.0.1:0"})
	require.NoError(t, err)
	t.Cleanup(func() { n.Close() })
	a := dialESL(t, n)
	a.login()
	a.subscribe("plain SHUTDOWN HEARTBEAT", wirePlainOK)
	b := dialESL(t, n)
	b.login()

	b.send("api fsctl shutdown\n\n")
	require.Equal(t, wireAPIOK, b.next().raw)
	require.Equal(t, wireShutdown, b.next().raw)
	b.expectEOF()
	a.nextEvent("SHUTDOWN")
	require.Equal(t, wireShutdown, a.next().raw)
	a.expectEOF()

	eventually(t, func() bool { return n.stopping.Load() }, "node stopping")
	require.NoError(t, n.Close())
	_, err = net.DialTimeout("tcp", n.ESLAddr(), waitFor)
	require.Error(t, err)
	requireNoNodeGoroutines(t)
}

// `fsctl shutdown now` stops like a crash: no event, no notice.
func TestESLShutdownNow(t *testing.T) {
	n, err := Start(t.Context(), Config{Logger: testLogger(), ESLAddr: "127.0.0.1:0"})
	require.NoError(t, err)
	t.Cleanup(func() { n.Close() })
	a := dialESL(t, n)
	a.login()
	a.subscribe("plain SHUTDOWN", wirePlainOK)
	b := dialESL(t, n)
	b.login()
	b.send("api fsctl shutdown now\n\n")
	a.expectEOF()
}

// TestESLShutdownElegant: elegant waits for the calls to end while still
// taking new ones; asap pauses; cancel stops the wait (Session G).
func TestESLShutdownElegant(t *testing.T) {
	n := startESLNode(t, Config{})
	p := newPhone(t, n, "UDP")
	c := dialESL(t, n)
	c.login()
	c.subscribe("plain BACKGROUND_JOB SHUTDOWN_REQUESTED SHUTDOWN", wirePlainOK)
	inv, rs := p.call()
	ok := rs[len(rs)-1]
	p.ack(inv, ok)

	c.send("bgapi fsctl shutdown asap\n\n")
	c.nextReply()
	_, ev := c.nextEvent("SHUTDOWN_REQUESTED")
	assert.Equal(t, "ASAP", ev.get("Event-Info"))
	assert.Equal(t, "true", c.api("fsctl shutdown_check"))
	assert.Equal(t, "true", c.api("fsctl pause_check"))
	assert.Equal(t, "false", c.api("fsctl ready_check"))
	requireMaxCalls(t, p.options())
	c.send("api fsctl shutdown cancel\n\n")
	c.expect(wireAPIOK)
	_, ev = c.nextEvent("BACKGROUND_JOB")
	assert.Equal(t, "+OK\n", ev.body)
	assert.Equal(t, "false", c.api("fsctl shutdown_check"))
	assert.Equal(t, "true", c.api("fsctl ready_check"))
	assert.Equal(t, 200, p.options().StatusCode)

	c.send("bgapi fsctl shutdown elegant\n\n")
	c.nextReply()
	_, ev = c.nextEvent("SHUTDOWN_REQUESTED")
	assert.Equal(t, "elegant", ev.get("Event-Info"))
	assert.Equal(t, 200, p.options().StatusCode, "elegant still takes calls")
	_, bye := p.request(sip.BYE, inv, ok)
	require.Equal(t, 200, bye.StatusCode)
	_, ev = c.nextEvent("BACKGROUND_JOB")
	assert.Equal(t, "+OK\n", ev.body)
	c.nextEvent("SHUTDOWN")
	require.Equal(t, wireShutdown, c.next().raw)
	c.expectEOF()
}

// TestESLLostEventsKill: a client that stops reading loses events; past
// the limit it is killed with FreeSWITCH's notice.
func TestESLLostEventsKill(t *testing.T) {
	n := startESLNode(t, Config{})
	n.esl.mu.Lock()
	n.esl.lim.queueLen = 10
	n.esl.lim.maxLost = 20
	n.esl.mu.Unlock()
	c := dialESL(t, n)
	c.login()
	c.subscribe("plain ALL", wirePlainOK)

	// Large events until the client's socket buffers are full and the
	// queue overflows; nobody reads meanwhile.
	floodUntil(t, n, func(c *eslConn) bool { return c.killed }, "listener killed")

	// Whatever was written before comes whole, then the notice, then EOF.
	var last eslMsg
	for {
		m, err := c.read()
		if err != nil {
			require.ErrorIs(t, err, io.EOF, "partial %q", m.raw)
			break
		}
		last = m
	}
	require.Equal(t, "Content-Type: text/disconnect-notice\nContent-Length: 39\n\nkilled listener because of lost events\n", last.raw)
}

// floodUntil fires large events at the node's one ESL connection until
// cond (called under the connection's lock) holds.
func floodUntil(t *testing.T, n *Node, cond func(*eslConn) bool, msg string) {
	t.Helper()
	big := strings.Repeat("x", 64<<10)
	eventually(t, func() bool {
		for i := 0; i < 50; i++ {
			n.esl.fire("CUSTOM", func(seq uint64, now time.Time) *eslEvent {
				e := n.esl.newEvent("CUSTOM", siteHeartbeat, seq, now)
				e.body = big
				return e
			})
		}
		n.esl.mu.Lock()
		defer n.esl.mu.Unlock()
		for c := range n.esl.conns {
			c.mu.Lock()
			defer c.mu.Unlock()
			return cond(c)
		}
		return false
	}, msg)
}

// TestESLCloseWithStalledClient: a client that never reads cannot hold
// Close up past the grace period, and nothing is left running.
func TestESLCloseWithStalledClient(t *testing.T) {
	n, err := Start(t.Context(), Config{Logger: testLogger(), ESLAddr: "127.0.0.1:0"})
	require.NoError(t, err)
	t.Cleanup(func() { n.Close() })
	n.esl.mu.Lock()
	n.esl.lim.closeGrace = 100 * time.Millisecond
	n.esl.mu.Unlock()
	c := dialESL(t, n)
	c.login()
	c.subscribe("plain ALL", wirePlainOK)
	p := newPhone(t, n, "UDP")
	inv, rs := p.call()
	p.ack(inv, rs[len(rs)-1])
	c.send("bgapi fsctl shutdown elegant\n\n") // a job waiting for the call to end

	floodUntil(t, n, func(c *eslConn) bool { return len(c.queue) >= 10 }, "the writer is stuck")

	closed := make(chan error, 1)
	go func() { closed <- n.Close() }()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(waitFor):
		t.Fatal("Close hangs on a client that does not read")
	}
	requireNoNodeGoroutines(t)
}

// TestESLOversizedCommand: a command block past the cap ends the
// connection.
func TestESLOversizedCommand(t *testing.T) {
	n := startESLNode(t, Config{})
	n.esl.mu.Lock()
	n.esl.lim.maxHeader = 4096
	n.esl.lim.maxBody = 1024
	n.esl.mu.Unlock()
	c := dialESL(t, n)
	c.login()
	c.send("api " + strings.Repeat("a", 5000) + "\n\n")
	c.expect(wireGoodbye)
	c.expectEOF()

	c = dialESL(t, n)
	c.login()
	c.send("sendevent CUSTOM\nContent-Length: 2048\n\n")
	c.expect(wireGoodbye)
	c.expectEOF()
}

// TestESLUnderLoad runs many calls at once with a subscriber taking every
// event; run with -race it checks the ESL side's locking.
func TestESLUnderLoad(t *testing.T) {
	const calls = 200
	n := startESLNode(t, Config{HeartbeatInterval: 10 * time.Millisecond, RingDelay: time.Millisecond})
	c := dialESL(t, n)
	c.login()
	c.subscribe("json ALL", wireJSONOK)
	other := dialESL(t, n) // a second client polling api meanwhile
	other.login()

	p := newPhone(t, n, "UDP")
	errs := make(chan error, calls)
	var wg sync.WaitGroup
	for i := 0; i < calls; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- placeCall(p)
		}()
	}
	apiDone := make(chan struct{})
	go func() {
		defer close(apiDone)
		for i := 0; i < 50; i++ {
			other.send("api status\n\napi show calls count\n\n")
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	<-apiDone
	for i := 0; i < 100; i++ {
		require.Equal(t, "api/response", other.nextReply().contentType())
	}

	created, hungUp := map[string]bool{}, map[string]bool{}
	for len(hungUp) < calls {
		m := c.next()
		if !m.isEvent() {
			continue
		}
		ev := parseEvent(t, m)
		switch ev.get("Event-Name") {
		case "CHANNEL_CREATE":
			created[ev.get("Unique-ID")] = true
		case "CHANNEL_HANGUP_COMPLETE":
			require.True(t, created[ev.get("Unique-ID")], "hang-up after create")
			hungUp[ev.get("Unique-ID")] = true
		}
	}
	assert.Len(t, created, calls)
}

// requireNoNodeGoroutines waits until no goroutine of a node (SIP or ESL)
// is left.
func requireNoNodeGoroutines(t *testing.T) {
	t.Helper()
	var left []string
	if !assert.Eventually(t, func() bool { left = nodeGoroutines(); return len(left) == 0 }, waitFor, 5*time.Millisecond) {
		t.Fatalf("node goroutines left after Close:\n%s", strings.Join(left, "\n\n"))
	}
}
