package rtpstream

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseSDP(t *testing.T) {
	tests := []struct {
		name    string
		sdp     string
		want    Media
		codec   string
		wantErr string
	}{
		{
			name: "session connection",
			sdp: "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n" +
				"m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n",
			want:  Media{Addr: netip.MustParseAddrPort("192.0.2.1:40000"), Formats: []uint8{0, 8, 101}},
			codec: "PCMU",
		},
		{
			name: "media connection wins, LF line ends",
			sdp: "v=0\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 40002 RTP/AVP 101 8\nc=IN IP4 198.51.100.7\n" +
				"m=video 50000 RTP/AVP 96\nc=IN IP4 203.0.113.9\n",
			want:  Media{Addr: netip.MustParseAddrPort("198.51.100.7:40002"), Formats: []uint8{101, 8}},
			codec: "PCMA",
		},
		{
			name:  "IPv6",
			sdp:   "v=0\r\nc=IN IP6 2001:db8::1\r\nm=audio 5004 RTP/AVP 8\r\n",
			want:  Media{Addr: netip.MustParseAddrPort("[2001:db8::1]:5004"), Formats: []uint8{8}},
			codec: "PCMA",
		},
		{
			name: "first audio stream only",
			sdp:  "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\nm=audio 5000 RTP/AVP 8\r\nc=IN IP4 192.0.2.2\r\n",
			want: Media{Addr: netip.MustParseAddrPort("192.0.2.1:4000"), Formats: []uint8{0}}, codec: "PCMU",
		},
		{name: "no audio", sdp: "v=0\r\nc=IN IP4 192.0.2.1\r\nm=video 4000 RTP/AVP 96\r\n", wantErr: "no audio stream"},
		{name: "disabled", sdp: "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 0 RTP/AVP 0\r\n", wantErr: "port 0"},
		{name: "no address", sdp: "v=0\r\nm=audio 4000 RTP/AVP 0\r\n", wantErr: "no connection address"},
		{name: "host name", sdp: "v=0\r\nc=IN IP4 pbx.example\r\nm=audio 4000 RTP/AVP 0\r\n", wantErr: "not an IP address"},
		{name: "bad port", sdp: "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio x RTP/AVP 0\r\n", wantErr: "bad port"},
		{name: "empty", sdp: "", wantErr: "no audio stream"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ParseSDP([]byte(tc.sdp))
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, m)
			c, ok := m.Codec()
			require.True(t, ok)
			assert.Equal(t, tc.codec, c.Name)
		})
	}
	_, ok := Media{Formats: []uint8{101, 18}}.Codec()
	assert.False(t, ok)
}
