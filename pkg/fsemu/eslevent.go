package fsemu

import (
	"strconv"
	"strings"
	"sync"
	"time"
)

// eventFormat is how a connection wants its events serialized.
type eventFormat uint8

const (
	formatPlain eventFormat = iota
	formatJSON
	formatXML
	numFormats
)

func (f eventFormat) String() string {
	switch f {
	case formatJSON:
		return "json"
	case formatXML:
		return "xml"
	default:
		return "plain"
	}
}

// eslHeader is one event header; events keep their headers in order.
type eslHeader struct{ name, value string }

// eslEvent is one fired event. It is immutable once fired and shared by
// every connection it is queued on; its wire form is built once per format.
type eslEvent struct {
	name    string // Event-Name
	headers []eslHeader
	body    string

	once  [numFormats]sync.Once
	frame [numFormats][]byte
}

func (e *eslEvent) add(name, value string) { e.headers = append(e.headers, eslHeader{name, value}) }

func (e *eslEvent) header(name string) (string, bool) {
	for _, h := range e.headers {
		if strings.EqualFold(h.name, name) {
			return h.value, true
		}
	}
	return "", false
}

// wire returns the event as written to a connection: Content-Length first,
// then Content-Type (mod_event_socket.c 1438), then the serialized event.
func (e *eslEvent) wire(f eventFormat) []byte {
	e.once[f].Do(func() {
		var body string
		switch f {
		case formatJSON:
			body = serializeJSON(e.headers, e.body)
		case formatXML:
			body = serializeXML(e.headers, e.body)
		default:
			body = serializePlain(e.headers, e.body)
		}
		e.frame[f] = []byte("Content-Length: " + strconv.Itoa(len(body)) + "\nContent-Type: text/event-" + f.String() + "\n\n" + body)
	})
	return e.frame[f]
}

// serializePlain is switch_event_serialize with encoding on: one
// "Name: url-encoded-value" line per header (an empty value is "_undef_"),
// then an empty line, or the body's Content-Length line, an empty line and
// the body.
func serializePlain(headers []eslHeader, body string) string {
	var b strings.Builder
	for _, h := range headers {
		v := urlEncode(h.value)
		if v == "" {
			v = "_undef_"
		}
		b.WriteString(h.name)
		b.WriteString(": ")
		b.WriteString(v)
		b.WriteByte('\n')
	}
	if body != "" {
		b.WriteString("Content-Length: ")
		b.WriteString(strconv.Itoa(len(body)))
		b.WriteString("\n\n")
		b.WriteString(body)
	} else {
		b.WriteByte('\n')
	}
	return b.String()
}

// serializeJSON is switch_event_serialize_json: a flat object of strings
// as cJSON prints it unformatted, values not URL-encoded, no newline. A
// body adds "Content-Length" and "_body".
func serializeJSON(headers []eslHeader, body string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, h := range headers {
		if i > 0 {
			b.WriteByte(',')
		}
		writeJSONString(&b, h.name)
		b.WriteByte(':')
		writeJSONString(&b, h.value)
	}
	if body != "" {
		if len(headers) > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"Content-Length":`)
		writeJSONString(&b, strconv.Itoa(len(body)))
		b.WriteString(`,"_body":`)
		writeJSONString(&b, body)
	}
	b.WriteByte('}')
	return b.String()
}

// writeJSONString escapes like cJSON: quote, backslash and the C escapes,
// other control bytes as \u00xx; everything else, UTF-8 included, raw.
func writeJSONString(b *strings.Builder, s string) {
	const hexDigits = "0123456789abcdef"
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if c < 0x20 {
				b.WriteString(`\u00`)
				b.WriteByte(hexDigits[c>>4])
				b.WriteByte(hexDigits[c&0xf])
			} else {
				b.WriteByte(c)
			}
		}
	}
	b.WriteByte('"')
}

// serializeXML is switch_event_xmlize printed by switch_xml_toxml: one
// element per header holding the URL-encoded value, then the body's
// Content-Length and body elements.
func serializeXML(headers []eslHeader, body string) string {
	var b strings.Builder
	b.WriteString("<event>\n  <headers>\n")
	for _, h := range headers {
		b.WriteString("    <")
		b.WriteString(h.name)
		b.WriteByte('>')
		xmlEscape(&b, urlEncode(h.value))
		b.WriteString("</")
		b.WriteString(h.name)
		b.WriteString(">\n")
	}
	b.WriteString("  </headers>\n")
	if body != "" {
		b.WriteString("  <Content-Length>")
		b.WriteString(strconv.Itoa(len(body)))
		b.WriteString("</Content-Length>\n  <body>")
		xmlEscape(&b, body)
		b.WriteString("</body>\n")
	}
	b.WriteString("</event>\n")
	return b.String()
}

func xmlEscape(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '&':
			b.WriteString("&amp;")
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		default:
			b.WriteByte(c)
		}
	}
}

// urlUnsafe is SWITCH_URL_UNSAFE (src/include/switch_utils.h).
const urlUnsafe = "\r\n #%&+:;<=>?@[\\]^`{|}\""

// urlEncode is switch_url_encode (src/switch_utils.c): bytes below 0x20 or
// above 0x7E and the SWITCH_URL_UNSAFE set become %XX (upper-case hex),
// except that an existing %XX escape (upper-case hex digits) is kept.
func urlEncode(s string) string {
	const hexDigits = "0123456789ABCDEF"
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || strings.IndexByte(urlUnsafe, c) >= 0 {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' && i+2 < len(s) && strings.IndexByte(hexDigits, s[i+1]) >= 0 && strings.IndexByte(hexDigits, s[i+2]) >= 0 {
			b.WriteByte(c)
			continue
		}
		if c < 0x20 || c > 0x7e || strings.IndexByte(urlUnsafe, c) >= 0 {
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&0xf])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// eventNames are FreeSWITCH's event type names (EVENT_NAMES in
// src/switch_event.c), the ones `event` and `nixevent` accept.
var eventNames = func() map[string]bool {
	m := make(map[string]bool)
	for _, n := range strings.Fields(`CUSTOM CLONE CHANNEL_CREATE CHANNEL_DESTROY CHANNEL_STATE
		CHANNEL_CALLSTATE CHANNEL_ANSWER CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE CHANNEL_EXECUTE
		CHANNEL_EXECUTE_COMPLETE CHANNEL_HOLD CHANNEL_UNHOLD CHANNEL_BRIDGE CHANNEL_UNBRIDGE
		CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA CHANNEL_OUTGOING CHANNEL_PARK CHANNEL_UNPARK
		CHANNEL_APPLICATION CHANNEL_ORIGINATE CHANNEL_UUID API LOG INBOUND_CHAN OUTBOUND_CHAN
		STARTUP SHUTDOWN PUBLISH UNPUBLISH TALK NOTALK SESSION_CRASH MODULE_LOAD MODULE_UNLOAD
		DTMF MESSAGE PRESENCE_IN NOTIFY_IN PRESENCE_OUT PRESENCE_PROBE MESSAGE_WAITING
		MESSAGE_QUERY ROSTER CODEC BACKGROUND_JOB DETECTED_SPEECH DETECTED_TONE PRIVATE_COMMAND
		HEARTBEAT TRAP ADD_SCHEDULE DEL_SCHEDULE EXE_SCHEDULE RE_SCHEDULE RELOADXML NOTIFY
		PHONE_FEATURE PHONE_FEATURE_SUBSCRIBE SEND_MESSAGE RECV_MESSAGE REQUEST_PARAMS
		CHANNEL_DATA GENERAL COMMAND SESSION_HEARTBEAT CLIENT_DISCONNECTED SERVER_DISCONNECTED
		SEND_INFO RECV_INFO RECV_RTCP_MESSAGE SEND_RTCP_MESSAGE CALL_SECURE NAT RECORD_START
		RECORD_STOP PLAYBACK_START PLAYBACK_STOP CALL_UPDATE FAILURE SOCKET_DATA
		MEDIA_BUG_START MEDIA_BUG_STOP CONFERENCE_DATA_QUERY CONFERENCE_DATA CALL_SETUP_REQ
		CALL_SETUP_RESULT CALL_DETAIL DEVICE_STATE TEXT SHUTDOWN_REQUESTED ALL`) {
		m[n] = true
	}
	return m
}()

// eventType resolves a name given to `event`/`nixevent` like
// switch_name_event: case-insensitive, with or without "SWITCH_EVENT_".
func eventType(name string) (string, bool) {
	up := strings.ToUpper(name)
	if eventNames[up] {
		return up, true
	}
	if len(up) > 13 && eventNames[up[13:]] {
		return up[13:], true
	}
	return "", false
}

// Where FreeSWITCH fires the events the emulator fires (Event-Calling-*).
type callingSite struct {
	file, function string
	line           int
}

var (
	siteHeartbeat     = callingSite{"switch_core.c", "send_heartbeat", 95}
	siteShutdown      = callingSite{"switch_core.c", "switch_core_destroy", 3033}
	siteBackgroundJob = callingSite{"mod_event_socket.c", "api_exec", 1569}
	siteChannelCreate = callingSite{"switch_core_state_machine.c", "switch_core_session_run", 628}
	siteChannelHangup = callingSite{"switch_core_state_machine.c", "switch_core_session_reporting_state", 948}
)

// newEvent starts an event with the 13 standard headers FreeSWITCH adds to
// every event (switch_event_prep_for_delivery_detailed), in their order.
func (s *eslServer) newEvent(name string, site callingSite, seq uint64, now time.Time) *eslEvent {
	e := &eslEvent{name: name, headers: make([]eslHeader, 0, 48)}
	e.add("Event-Name", name)
	e.add("Core-UUID", s.core.uuid)
	e.add("FreeSWITCH-Hostname", s.core.hostname)
	e.add("FreeSWITCH-Switchname", s.switchname)
	e.add("FreeSWITCH-IPv4", s.ipv4)
	e.add("FreeSWITCH-IPv6", s.ipv6)
	e.add("Event-Date-Local", now.Format("2006-01-02 15:04:05"))
	e.add("Event-Date-GMT", now.UTC().Format("Mon, 02 Jan 2006 15:04:05 GMT"))
	e.add("Event-Date-Timestamp", strconv.FormatInt(now.UnixMicro(), 10))
	e.add("Event-Calling-File", site.file)
	e.add("Event-Calling-Function", site.function)
	e.add("Event-Calling-Line-Number", strconv.Itoa(site.line))
	e.add("Event-Sequence", strconv.FormatUint(seq, 10))
	return e
}

// heartbeatEvent builds HEARTBEAT (src/switch_core.c send_heartbeat) from
// the node's live figures: the 13 standard headers and 14 of its own.
func (s *eslServer) heartbeatEvent(seq uint64, now time.Time) *eslEvent {
	f := s.core.figures(int64(s.n.MaxSessions()))
	e := s.newEvent("HEARTBEAT", siteHeartbeat, seq, now)
	e.add("Event-Info", "System Ready")
	e.add("Up-Time", formatUptime(f.uptime))
	e.add("FreeSWITCH-Version", s.core.version)
	e.add("Uptime-msec", strconv.FormatInt(f.uptime.Milliseconds(), 10))
	e.add("Session-Count", strconv.FormatInt(f.sessions, 10))
	e.add("Max-Sessions", strconv.FormatInt(f.maxSessions, 10))
	e.add("Session-Per-Sec", strconv.FormatInt(f.spsRemaining, 10))
	e.add("Session-Per-Sec-Last", strconv.FormatInt(f.spsLast, 10))
	e.add("Session-Per-Sec-Max", strconv.FormatInt(f.spsPeak, 10))
	e.add("Session-Per-Sec-FiveMin", strconv.FormatInt(f.spsPeak5, 10))
	e.add("Session-Since-Startup", strconv.FormatInt(f.total, 10))
	e.add("Session-Peak-Max", strconv.FormatInt(f.peak, 10))
	e.add("Session-Peak-FiveMin", strconv.FormatInt(f.peak5, 10))
	e.add("Idle-CPU", strconv.FormatFloat(f.idleCPU, 'f', 6, 64))
	return e
}
