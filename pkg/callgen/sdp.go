package callgen

import (
	"net"
	"strconv"
	"strings"
)

// sdp is an audio offer on port (bound, so the address is real): the
// configured codec first, then the other G.711 and telephone-event.
// sessID makes the o= line unique per call.
func (u *UAC) sdp(sessID uint64, port int) []byte {
	ipv := "IP4"
	if ip := net.ParseIP(u.host); ip != nil && ip.To4() == nil {
		ipv = "IP6"
	}
	formats := "0 8 101"
	if u.codec.PayloadType == 8 {
		formats = "8 0 101"
	}
	id := strconv.FormatUint(u.sessBase+sessID, 10)
	var b strings.Builder
	b.WriteString("v=0\r\n")
	b.WriteString("o=" + u.cfg.User + " " + id + " " + id + " IN " + ipv + " " + u.host + "\r\n")
	b.WriteString("s=callgen\r\n")
	b.WriteString("c=IN " + ipv + " " + u.host + "\r\n")
	b.WriteString("t=0 0\r\n")
	b.WriteString("m=audio " + strconv.Itoa(port) + " RTP/AVP " + formats + "\r\n")
	b.WriteString("a=rtpmap:0 PCMU/8000\r\n")
	b.WriteString("a=rtpmap:8 PCMA/8000\r\n")
	b.WriteString("a=rtpmap:101 telephone-event/8000\r\n")
	b.WriteString("a=fmtp:101 0-16\r\n")
	b.WriteString("a=ptime:20\r\n")
	b.WriteString("a=sendrecv\r\n")
	return []byte(b.String())
}
