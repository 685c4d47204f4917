package fsemu

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Exact messages from shared/esl-real-transcripts.md (FreeSWITCH 1.11.0).
const (
	wireGreeting     = "Content-Type: auth/request\n\n"
	wireAccepted     = "Content-Type: command/reply\nReply-Text: +OK accepted\n\n"
	wireInvalid      = "Content-Type: command/reply\nReply-Text: -ERR invalid\n\n"
	wireNotFound     = "Content-Type: command/reply\nReply-Text: -ERR command not found\n\n"
	wireBye          = "Content-Type: command/reply\nReply-Text: +OK bye\n\n"
	wireGoodbye      = "Content-Type: text/disconnect-notice\nContent-Length: 67\n\nDisconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
	wireShutdown     = "Content-Type: text/disconnect-notice\nContent-Length: 31\n\nThe system is being shut down.\n"
	wirePlainOK      = "Content-Type: command/reply\nReply-Text: +OK event listener enabled plain\n\n"
	wireJSONOK       = "Content-Type: command/reply\nReply-Text: +OK event listener enabled json\n\n"
	wireXMLOK        = "Content-Type: command/reply\nReply-Text: +OK event listener enabled xml\n\n"
	wireNoKeywords   = "Content-Type: command/reply\nReply-Text: -ERR no keywords supplied\n\n"
	wireNoEvents     = "Content-Type: command/reply\nReply-Text: +OK no longer listening for events\n\n"
	wireZeroCalls    = "Content-Type: api/response\nContent-Length: 10\n\n\n0 total.\n"
	wireFalse        = "Content-Type: api/response\nContent-Length: 5\n\nfalse"
	wireTrue         = "Content-Type: api/response\nContent-Length: 4\n\ntrue"
	wireAPIOK        = "Content-Type: api/response\nContent-Length: 4\n\n+OK\n"
	wireMax1000      = "Content-Type: api/response\nContent-Length: 23\n\n+OK max sessions: 1000\n"
	wireMax3         = "Content-Type: api/response\nContent-Length: 20\n\n+OK max sessions: 3\n"
	wireNoSuchCmd    = "Content-Type: api/response\nContent-Length: 34\n\n-ERR nosuchcmd Command not found!\n"
	wireZeroRowsJSON = "Content-Type: api/response\nContent-Length: 17\n\n{\"row_count\": 0}\n"
)

// eslClient is a raw TCP Event Socket client: it writes bytes as given and
// reads whole messages (header block plus Content-Length body) keeping
// their exact bytes. Reads fail the test after waitFor.
type eslClient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

// eslMsg is one message from the server.
type eslMsg struct {
	raw     string
	headers map[string]string
	body    string
}

func (m eslMsg) contentType() string { return m.headers["Content-Type"] }

func (m eslMsg) isEvent() bool { return strings.HasPrefix(m.contentType(), "text/event-") }

func dialESL(t *testing.T, n *Node) *eslClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", n.ESLAddr(), waitFor)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return &eslClient{t: t, conn: conn, r: bufio.NewReader(conn)}
}

func (c *eslClient) send(s string) {
	c.t.Helper()
	_, err := c.conn.Write([]byte(s))
	require.NoError(c.t, err)
}

// read returns the next message or the read error.
func (c *eslClient) read() (eslMsg, error) {
	if c.conn != nil {
		_ = c.conn.SetReadDeadline(time.Now().Add(waitFor))
	}
	var raw strings.Builder
	m := eslMsg{headers: map[string]string{}}
	for {
		line, err := c.r.ReadString('\n')
		raw.WriteString(line)
		if err != nil {
			if raw.Len() > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return eslMsg{raw: raw.String()}, err
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			break
		}
		k, v, _ := strings.Cut(line, ": ")
		m.headers[k] = v
	}
	if cl := m.headers["Content-Length"]; cl != "" {
		n, err := strconv.Atoi(cl)
		if err != nil {
			return m, err
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(c.r, body); err != nil {
			return m, err
		}
		m.body = string(body)
		raw.Write(body)
	}
	m.raw = raw.String()
	return m, nil
}

func (c *eslClient) next() eslMsg {
	c.t.Helper()
	m, err := c.read()
	require.NoError(c.t, err, "reading an ESL message (partial: %q)", m.raw)
	return m
}

// nextReply skips events (HEARTBEATs may come at any time) and returns
// the next other message.
func (c *eslClient) nextReply() eslMsg {
	c.t.Helper()
	for {
		if m := c.next(); !m.isEvent() {
			return m
		}
	}
}

// expect reads the next non-event message and checks its exact bytes.
func (c *eslClient) expect(want string) {
	c.t.Helper()
	require.Equal(c.t, want, c.nextReply().raw)
}

// expectEOF checks that the server closed the connection.
func (c *eslClient) expectEOF() {
	c.t.Helper()
	m, err := c.read()
	require.ErrorIs(c.t, err, io.EOF, "got %q instead of EOF", m.raw)
}

// nextEvent skips messages until an event called name.
func (c *eslClient) nextEvent(name string) (eslMsg, *parsedEvent) {
	c.t.Helper()
	for {
		m := c.next()
		if !m.isEvent() {
			continue
		}
		ev := parseEvent(c.t, m)
		if ev.get("Event-Name") == name {
			return m, ev
		}
	}
}

// login reads the greeting and authenticates.
func (c *eslClient) login() {
	c.t.Helper()
	require.Equal(c.t, wireGreeting, c.next().raw)
	c.send("auth ClueCon\n\n")
	require.Equal(c.t, wireAccepted, c.next().raw)
}

// subscribe sends `event <args>` and checks the reply.
func (c *eslClient) subscribe(args, want string) {
	c.t.Helper()
	c.send("event " + args + "\n\n")
	c.expect(want)
}

// api runs an api command and returns the api/response body.
func (c *eslClient) api(cmd string) string {
	c.t.Helper()
	c.send("api " + cmd + "\n\n")
	m := c.nextReply()
	require.Equal(c.t, "api/response", m.contentType(), "%q", m.raw)
	return m.body
}

// parsedEvent is an event body taken apart: headers in order (decoded:
// URL-decoded for plain and xml, as is for json) and its own body.
type parsedEvent struct {
	format  string
	keys    []string
	values  map[string]string
	rawVals map[string]string // as on the wire (plain, xml)
	body    string
}

func (e *parsedEvent) get(k string) string { return e.values[k] }

func parseEvent(t *testing.T, m eslMsg) *parsedEvent {
	t.Helper()
	e := &parsedEvent{values: map[string]string{}, rawVals: map[string]string{}}
	add := func(k, raw string, decode bool) {
		e.keys = append(e.keys, k)
		e.rawVals[k] = raw
		v := raw
		if decode {
			var err error
			v, err = url.PathUnescape(raw)
			require.NoError(t, err, "%s: %q", k, raw)
		}
		e.values[k] = v
	}
	switch m.contentType() {
	case "text/event-plain":
		e.format = "plain"
		head, body, _ := strings.Cut(m.body, "\n\n")
		for _, line := range strings.Split(head, "\n") {
			k, v, ok := strings.Cut(line, ": ")
			require.True(t, ok, "header line %q", line)
			if k == "Content-Length" && body != "" {
				e.body = body
				break
			}
			add(k, v, true)
		}
	case "text/event-json":
		e.format = "json"
		for _, kv := range orderedJSON(t, m.body) {
			if kv[0] == "_body" {
				e.body = kv[1]
				continue
			}
			add(kv[0], kv[1], false)
		}
	case "text/event-xml":
		e.format = "xml"
		inner := strings.TrimPrefix(m.body, "<event>\n  <headers>\n")
		head, _, _ := strings.Cut(inner, "  </headers>\n")
		for _, line := range strings.Split(strings.TrimSuffix(head, "\n"), "\n") {
			line = strings.TrimPrefix(line, "    <")
			k, rest, _ := strings.Cut(line, ">")
			v := strings.TrimSuffix(rest, "</"+k+">")
			add(k, v, true)
		}
	default:
		t.Fatalf("not an event: %q", m.raw)
	}
	return e
}

// orderedJSON reads a flat JSON object of strings keeping key order.
func orderedJSON(t *testing.T, s string) [][2]string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	tok, err := dec.Token()
	require.NoError(t, err)
	require.Equal(t, json.Delim('{'), tok)
	var out [][2]string
	for dec.More() {
		k, err := dec.Token()
		require.NoError(t, err)
		v, err := dec.Token()
		require.NoError(t, err)
		ks, ok1 := k.(string)
		vs, ok2 := v.(string)
		require.True(t, ok1 && ok2, "%v: %v", k, v)
		out = append(out, [2]string{ks, vs})
	}
	return out
}

// transcriptEvent reads an event captured from FreeSWITCH, stored under
// testdata/esl with its exact bytes.
func transcriptEvent(t *testing.T, name string) (eslMsg, *parsedEvent) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "esl", name+".txt"))
	require.NoError(t, err)
	c := &eslClient{t: t, r: bufio.NewReader(bytes.NewReader(raw))}
	m := c.next()
	require.Equal(t, string(raw), m.raw)
	return m, parseEvent(t, m)
}
