package health

// Fuzz targets for the Event Socket wire parsers, which read bytes straight
// off the network. Seed corpora live in testdata/fuzz/<FuzzName>/ (real
// FreeSWITCH messages from testdata/transcripts plus hand-made tricky
// inputs), so a plain `go test` replays them. To fuzz:
//
//	go test -run '^$' -fuzz '^FuzzReadESLMessage$' -fuzztime 60s ./pkg/health/

import (
	"bufio"
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// eslEncodeValue percent-encodes what readESLMessage and parseEventPlain
// would otherwise read differently: '%', control bytes and blanks. Its
// output decodes back to v.
func eslEncodeValue(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '%' || c <= ' ' || c >= 0x7f {
			b.WriteByte('%')
			b.WriteByte("0123456789ABCDEF"[c>>4])
			b.WriteByte("0123456789ABCDEF"[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func checkHeaderNames(t *testing.T, hs eslHeaders) {
	for _, h := range hs {
		require.NotEmpty(t, h.name)
		require.NotContains(t, h.name, ":")
		require.NotContains(t, h.name, "\n")
	}
}

// FuzzReadESLMessage reads a stream of messages. Every message it accepts
// must have a body of exactly its Content-Length and must read back the same
// after being written out again.
func FuzzReadESLMessage(f *testing.F) {
	const maxBody = 1 << 20
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReaderSize(bytes.NewReader(data), 16)
		for range 1000 {
			m, err := readESLMessage(r, maxBody)
			if err != nil {
				require.Nil(t, m)
				return
			}
			require.NotEmpty(t, m.headers)
			checkHeaderNames(t, m.headers)
			n, ok, err := contentLength(m.headers, maxBody)
			require.NoError(t, err)
			if ok {
				require.Len(t, m.body, n)
			} else {
				require.Nil(t, m.body)
			}

			var enc bytes.Buffer
			for _, h := range m.headers {
				enc.WriteString(h.name + ": " + eslEncodeValue(h.value) + "\n")
			}
			enc.WriteString("\n")
			enc.Write(m.body)
			again, err := readESLMessage(bufio.NewReader(&enc), maxBody)
			require.NoError(t, err, "re-reading %q", enc.String())
			require.Equal(t, m.headers, again.headers)
			require.Equal(t, m.body, again.body)
		}
	})
}

// FuzzParseEventPlain parses event bodies. Whatever it accepts must parse
// the same after being serialized the way FreeSWITCH does it (URL-encoded
// values, _undef_ for empty ones, the event's own body after the empty
// line).
func FuzzParseEventPlain(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		hs, err := parseEventPlain(data)
		if err != nil {
			require.Nil(t, hs)
			return
		}
		require.NotEmpty(t, hs)
		checkHeaderNames(t, hs)

		lines := hs
		var body *string
		if _, ok := hs.get("Content-Length"); ok {
			last := hs[len(hs)-1]
			require.Equal(t, eslBodyHeader, last.name, "an event with a Content-Length ends with its body")
			lines, body = hs[:len(hs)-1], &last.value
		}
		var enc strings.Builder
		for _, h := range lines {
			v := eslEncodeValue(h.value)
			switch v {
			case "":
				v = "_undef_"
			case "_undef_":
				v = "%5Fundef_"
			}
			enc.WriteString(h.name + ": " + v + "\n")
		}
		enc.WriteString("\n")
		if body != nil {
			enc.WriteString(*body)
		}
		again, err := parseEventPlain([]byte(enc.String()))
		require.NoError(t, err, "re-parsing %q", enc.String())
		require.Equal(t, hs, again)
	})
}

// FuzzParseStatus feeds api reply bodies to every reply parser. What they
// accept must be sane figures.
func FuzzParseStatus(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		if fig, err := parseStatus(data); err == nil {
			require.GreaterOrEqual(t, fig.sessions, int64(0))
			require.GreaterOrEqual(t, fig.sessionsPeak, int64(0))
			require.GreaterOrEqual(t, fig.maxSessions, int64(0))
			require.GreaterOrEqual(t, fig.sessionsPerSecBudget(), int64(0))
			for _, p := range []float64{fig.idleCPU, fig.minIdleCPU} {
				require.False(t, math.IsNaN(p))
				require.GreaterOrEqual(t, p, 0.0)
				require.LessOrEqual(t, p, 100.0)
			}
			require.NotContains(t, fig.version, " ")
		}
		if known, running := parseSofiaStatus(data); running {
			require.True(t, known)
		}
		if n, err := parseCallsCount(data); err == nil {
			require.GreaterOrEqual(t, n, int64(0))
		}
		_, _ = parseBoolReply(data)
	})
}
