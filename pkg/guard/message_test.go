package guard

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// crlf turns a readable message (LF line ends) into wire form.
func crlf(s string) []byte { return []byte(strings.ReplaceAll(s, "\n", "\r\n")) }

const invite = `INVITE sip:+15551234567@pbx.example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport
Max-Forwards: 70
To: <sip:+15551234567@pbx.example.com>
From: "Alice" <sip:alice@carrier.example.net>;tag=1928301774
Call-ID: a84b4c76e66710@192.0.2.10
CSeq: 314159 INVITE
Contact: <sip:alice@192.0.2.10:5060>
Content-Type: application/sdp
Content-Length: 134

v=0
o=alice 2890844526 2890844526 IN IP4 192.0.2.10
s=-
c=IN IP4 192.0.2.10
t=0 0
m=audio 49170 RTP/AVP 0
a=rtpmap:0 PCMU/8000
`

func withHeader(msg, hdr string) string {
	return strings.Replace(msg, "Max-Forwards: 70\n", "Max-Forwards: 70\n"+hdr+"\n", 1)
}

func manyHeaders(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "X-H%d: v\n", i)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func manyVias(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "Via: SIP/2.0/UDP h%d.example.com;branch=z9hG4bK%d\n", i, i)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

var testLimits = MessageLimits{MaxBytes: 2048, MaxHeaders: 20, MaxHeaderBytes: 200, MaxVias: 5}

func TestInspectDatagramLimits(t *testing.T) {
	long := strings.Repeat("a", 300)
	tests := []struct {
		name string
		data []byte
		want Reason
	}{
		{"typical INVITE", crlf(invite), ReasonNone},
		{"LF only", []byte(invite), ReasonNone},
		{"too large", crlf(withHeader(invite, strings.Repeat("X-Pad: "+strings.Repeat("p", 180)+"\n", 9)+"X-End: 1")), ReasonTooLarge},
		{"headers at the limit", crlf(withHeader(invite, manyHeaders(11))), ReasonNone},
		{"one header too many", crlf(withHeader(invite, manyHeaders(12))), ReasonTooManyHeaders},
		{"folded lines count once", crlf(withHeader(invite, "X-Fold: a\n b\n\tc\n d\n e\n f\n g\n h\n i\n j\n k")), ReasonNone},
		{"header at the byte limit (its CR counts, LFs do not)", crlf(withHeader(invite, "X-Long: "+long[:191])), ReasonNone},
		{"header over the byte limit", crlf(withHeader(invite, "X-Long: "+long[:192])), ReasonHeaderTooLong},
		{"folded header over the limit", crlf(withHeader(invite, "X-Long: "+long[:100]+"\n "+long[:100])), ReasonHeaderTooLong},
		{"start line over the limit", crlf(strings.Replace(invite, "pbx.example.com SIP", "pbx"+long+".example.com SIP", 1)), ReasonHeaderTooLong},
		{"vias at the limit", crlf(withHeader(invite, manyVias(4))), ReasonNone},
		{"one via too many", crlf(withHeader(invite, manyVias(5))), ReasonTooManyVias},
		{"comma-separated vias", crlf(withHeader(invite, "v: SIP/2.0/UDP a, SIP/2.0/UDP b,SIP/2.0/UDP c, SIP/2.0/TCP d, SIP/2.0/TCP e")), ReasonTooManyVias},
		{"comma in a quoted via param", crlf(withHeader(invite, `Via: SIP/2.0/UDP a;x=",,,,,,"`)), ReasonNone},
		{"folded via list", crlf(withHeader(invite, "VIA : SIP/2.0/UDP a,\n SIP/2.0/UDP b,\n SIP/2.0/UDP c,\n SIP/2.0/UDP d,\n SIP/2.0/UDP e")), ReasonTooManyVias},
		{"comma after a folded quote", crlf(withHeader(invite, "Via: SIP/2.0/UDP a;x=\"q\n ,,,,,\"")), ReasonNone},
		{"via name with spaces", crlf(withHeader(invite, "Via  \t: SIP/2.0/UDP a, SIP/2.0/UDP b, SIP/2.0/UDP c, SIP/2.0/UDP d, SIP/2.0/UDP e")), ReasonTooManyVias},
		{"not via", crlf(withHeader(invite, "Vias: a,b,c,d,e,f,g,h")), ReasonNone},
		{"headers after the body are body", crlf(invite + manyHeaders(30)), ReasonNone},
		{"binary junk", bytes.Repeat([]byte{0, 0xff, 0x80, 'a'}, 40), ReasonNone},
		{"binary junk with many lines", bytes.Repeat([]byte{0xfe, '\n'}, 100), ReasonTooManyHeaders},
		{"a long line of junk", bytes.Repeat([]byte{0xfe}, 300), ReasonHeaderTooLong},
		{"empty", nil, ReasonNone},
		{"CR-led garbage lines", []byte("X\r\r\nY\r\r\n\r\n"), ReasonNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, InspectDatagram(tt.data, testLimits).Reason)
		})
	}
	assert.Equal(t, ReasonNone, InspectDatagram(crlf(withHeader(invite, manyHeaders(200))), MessageLimits{}).Reason, "limits off")
}

func TestInspectDatagramPeek(t *testing.T) {
	tests := []struct {
		name string
		data string
		want Datagram
	}{
		{"new call", invite, Datagram{Request: true, Invite: true}},
		{"re-INVITE", strings.Replace(invite, "pbx.example.com>\n", "pbx.example.com>;tag=abc\n", 1), Datagram{Request: true, Invite: true, ToTag: true}},
		{"lowercase method, as sipgo reads it", "invite sip:a@b SIP/2.0\nTo: <sip:a@b>\n\n", Datagram{Request: true, Invite: true}},
		{"INVITEX is not INVITE", "INVITEX sip:a@b SIP/2.0\nTo: <sip:a@b>\n\n", Datagram{Request: true}},
		{"BYE: To tags are looked for in INVITEs only", "BYE sip:a@b SIP/2.0\nTo: <sip:a@b>;tag=1\n\n", Datagram{Request: true}},
		{"response", "SIP/2.0 200 OK\nTo: <sip:a@b>;tag=1\n\n", Datagram{}},
		{"response, lowercase", "sip/2.0 180 Ringing\n\n", Datagram{}},
		{"keep-alive", "\r\n\r\n", Datagram{KeepAlive: true}},
		{"junk is a request", "\x00\x01hello", Datagram{Request: true}},
		{"compact To with LWS, folded (RFC 4475 wsinv)", "INVITE sip:a@b SIP/2.0\nTO :\n sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\n\n",
			Datagram{Request: true, Invite: true, ToTag: true}},
		{"t: compact", "INVITE sip:a@b SIP/2.0\nt: sip:a@b;TAG=x\n\n", Datagram{Request: true, Invite: true, ToTag: true}},
		{"tag inside the URI is not the header's", "INVITE sip:a@b SIP/2.0\nTo: <sip:a@b;tag=x>\n\n", Datagram{Request: true, Invite: true}},
		{"tag inside quotes", "INVITE sip:a@b SIP/2.0\nTo: \"x;tag=y\" <sip:a@b>\n\n", Datagram{Request: true, Invite: true}},
		{"escaped quote in the display name", "INVITE sip:a@b SIP/2.0\nTo: \"x\\\";tag=y\" <sip:a@b>\n\n", Datagram{Request: true, Invite: true}},
		{"tagx is not tag", "INVITE sip:a@b SIP/2.0\nTo: <sip:a@b>;tagx=1\n\n", Datagram{Request: true, Invite: true}},
		{"only the first To", "INVITE sip:a@b SIP/2.0\nTo: <sip:a@b>\nTo: <sip:a@b>;tag=1\n\n", Datagram{Request: true, Invite: true}},
		{"To in the body", "INVITE sip:a@b SIP/2.0\nCall-ID: x\n\nTo: <sip:a@b>;tag=1\n", Datagram{Request: true, Invite: true}},
		{"Toe is not To", "INVITE sip:a@b SIP/2.0\nToe: <sip:a@b>;tag=1\n\n", Datagram{Request: true, Invite: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := InspectDatagram(crlf(tt.data), testLimits)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.want.Request && tt.want.Invite && !tt.want.ToTag, got.NewCall())
		})
	}
}

func TestInspectDatagramNoAllocs(t *testing.T) {
	data := crlf(invite)
	assert.Zero(t, testing.AllocsPerRun(100, func() { InspectDatagram(data, testLimits) }))
}

// feedChunks feeds data to a fresh stream scanner in chunks of size n
// (0: all at once) and returns the reason and the messages framed.
func feedChunks(lim MessageLimits, data []byte, n int) (Reason, int) {
	s := newStreamScanner(lim)
	if n <= 0 {
		n = len(data) + 1
	}
	for len(data) > 0 {
		k := min(n, len(data))
		if r := s.feed(data[:k]); r != ReasonNone {
			return r, s.messages
		}
		data = data[k:]
	}
	return ReasonNone, s.messages
}

func TestStreamScanner(t *testing.T) {
	bye := "BYE sip:a@b SIP/2.0\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\nTo: <sip:a@b>;tag=1\nContent-Length: 0\n\n"
	tests := []struct {
		name string
		data []byte
		want Reason
		msgs int
	}{
		{"one INVITE", crlf(invite), ReasonNone, 1},
		{"three messages", crlf(invite + bye + invite), ReasonNone, 3},
		{"CRLF before and between messages", crlf("\n\n" + invite + "\n\n" + bye), ReasonNone, 2},
		{"keep-alive alone", []byte("\r\n\r\n\r\n\r\n"), ReasonNone, 0},
		{"compact l:", crlf("OPTIONS sip:a@b SIP/2.0\nl:  5 \n\nhello"), ReasonNone, 1},
		{"folded Content-Length", crlf("OPTIONS sip:a@b SIP/2.0\nContent-Length:\n 5\n\nhello"), ReasonNone, 1},
		{"last Content-Length wins, as in sipgo", crlf("OPTIONS sip:a@b SIP/2.0\nContent-Length: 100\nl: 2\n\nhi" + bye), ReasonNone, 2},
		{"Content-Length name with spaces", crlf("OPTIONS sip:a@b SIP/2.0\nContent-Length   : 2\n\nhi"), ReasonNone, 1},
		{"body with CR and LF is opaque", append(crlf("MESSAGE sip:a@b SIP/2.0\nl: 6\n\n"), "\r\r\n\n\x00\r"...), ReasonNone, 1},
		{"body split, message incomplete", crlf("MESSAGE sip:a@b SIP/2.0\nl: 60\n\nshort"), ReasonNone, 0},
		{"second message over the header limit", crlf(bye + withHeader(invite, manyHeaders(20))), ReasonTooManyHeaders, 1},
		{"limits reset per message", crlf(strings.Repeat(withHeader(invite, manyHeaders(10)), 5)), ReasonNone, 5},
		{"declared body too large", crlf("MESSAGE sip:a@b SIP/2.0\nl: 5000\n\n"), ReasonTooLarge, 0},
		{"headers too large", crlf(withHeader(invite, strings.Repeat("X-P: "+strings.Repeat("p", 150)+"\n", 15))), ReasonTooLarge, 0},
		{"too many vias", crlf(withHeader(invite, manyVias(6))), ReasonTooManyVias, 0},
		{"header too long", crlf(withHeader(invite, "X-L: "+strings.Repeat("l", 300))), ReasonHeaderTooLong, 0},
		{"no Content-Length", crlf("OPTIONS sip:a@b SIP/2.0\nTo: x\n\n"), ReasonBadFraming, 0},
		{"negative Content-Length", crlf("OPTIONS sip:a@b SIP/2.0\nContent-Length: -1\n\n"), ReasonBadFraming, 0},
		{"Content-Length with junk", crlf("OPTIONS sip:a@b SIP/2.0\nContent-Length: 1 0\n\n"), ReasonBadFraming, 0},
		{"Content-Length over 32 bits", crlf("OPTIONS sip:a@b SIP/2.0\nContent-Length: 4294967296\n\n"), ReasonBadFraming, 0},
		{"a bad Content-Length before a good one", crlf("OPTIONS sip:a@b SIP/2.0\nl: x\nl: 0\n\n"), ReasonBadFraming, 0},
		{"leading zeros", crlf("OPTIONS sip:a@b SIP/2.0\nl: 00000000000000000000000000000000000000002\n\nhi"), ReasonNone, 1},
		{"bare LF", []byte("OPTIONS sip:a@b SIP/2.0\nl: 0\n\n"), ReasonBadFraming, 0},
		{"bare CR", []byte("OPTIONS sip:a@b SIP/2.0\r\nl: 0\rX\r\n\r\n"), ReasonBadFraming, 0},
		{"CR then junk on an empty line", []byte("OPTIONS sip:a@b SIP/2.0\r\nl: 0\r\n\rX\r\n"), ReasonBadFraming, 0},
		{"field with no colon", crlf("OPTIONS sip:a@b SIP/2.0\nNoColon\nl: 0\n\n"), ReasonBadFraming, 0},
		{"last field with no colon", crlf("OPTIONS sip:a@b SIP/2.0\nl: 0\nNoColon\n\n"), ReasonBadFraming, 0},
		{"colon on a folded line, as sipgo folds", crlf("OPTIONS sip:a@b SIP/2.0\nContent-Length\n : 2\n\nhi"), ReasonNone, 1},
		{"binary junk", bytes.Repeat([]byte{0x16, 0x03, 0x01, 0x02}, 50), ReasonNone, 0},
		{"junk line too long", bytes.Repeat([]byte{0x16}, 70000), ReasonHeaderTooLong, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, chunk := range []int{0, 1, 2, 3, 7, 64} {
				r, msgs := feedChunks(testLimits, tt.data, chunk)
				require.Equal(t, tt.want, r, "chunk %d", chunk)
				require.Equal(t, tt.msgs, msgs, "chunk %d", chunk)
			}
		})
	}
	r, _ := feedChunks(MessageLimits{}, bytes.Repeat([]byte{'x'}, 70000), 0)
	assert.Equal(t, ReasonHeaderTooLong, r, "a line over 64 KiB even with limits off")
}

func TestStreamScannerIdle(t *testing.T) {
	s := newStreamScanner(testLimits)
	assert.True(t, s.idle())
	require.Equal(t, ReasonNone, s.feed([]byte("OPTIONS sip:a@b SIP/2.0\r\nl: 2\r\n")))
	assert.False(t, s.idle())
	require.Equal(t, ReasonNone, s.feed([]byte("\r\nh")))
	assert.False(t, s.idle(), "in the body")
	require.Equal(t, ReasonNone, s.feed([]byte("i")))
	assert.True(t, s.idle())
	require.Equal(t, ReasonNone, s.feed([]byte("\r\n")))
	assert.True(t, s.idle(), "a keep-alive is no message")
	require.Equal(t, ReasonNone, s.feed([]byte("OPT")))
	assert.False(t, s.idle())
}

func TestStreamScannerNoAllocs(t *testing.T) {
	data := crlf(invite)
	s := newStreamScanner(testLimits)
	assert.Zero(t, testing.AllocsPerRun(100, func() {
		if s.feed(data) != ReasonNone {
			panic("refused")
		}
	}))
}
