package rtpstream

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Media is the audio stream an SDP body describes: where to send it and
// which payload types, in the order of preference.
type Media struct {
	Addr    netip.AddrPort
	Formats []uint8
}

// Codec returns the first G.711 codec among the formats.
func (m Media) Codec() (Codec, bool) {
	for _, pt := range m.Formats {
		if c, ok := CodecByPayloadType(pt); ok {
			return c, true
		}
	}
	return Codec{}, false
}

// ParseSDP reads the first audio stream of an SDP body (RFC 8866): its port
// from the m= line, its address from the c= line of the media section or,
// without one, of the session. Only IP addresses are taken in c= lines, as
// every SIP device writes them.
func ParseSDP(body []byte) (Media, error) {
	var (
		session, media netip.Addr
		inAudio, found bool
		m              Media
		port           int
	)
	for line := range strings.Lines(string(body)) {
		line = strings.TrimRight(line, "\r\n")
		switch {
		case strings.HasPrefix(line, "m="):
			if found {
				// The first audio stream is complete.
				inAudio = false
				continue
			}
			fields := strings.Fields(line[2:])
			if len(fields) < 4 || fields[0] != "audio" {
				inAudio = false
				continue
			}
			p, err := strconv.Atoi(strings.Split(fields[1], "/")[0])
			if err != nil || p < 0 || p > 65535 {
				return Media{}, fmt.Errorf("rtpstream: sdp: bad port in %q", line)
			}
			inAudio, found, port = true, true, p
			for _, f := range fields[3:] {
				if pt, err := strconv.Atoi(f); err == nil && pt >= 0 && pt < 128 {
					m.Formats = append(m.Formats, uint8(pt))
				}
			}
		case strings.HasPrefix(line, "c="):
			a, err := connectionAddr(line[2:])
			if err != nil {
				return Media{}, err
			}
			switch {
			case inAudio:
				media = a
			case !found:
				session = a
			}
		}
	}
	if !found {
		return Media{}, errors.New("rtpstream: sdp: no audio stream")
	}
	if port == 0 {
		return Media{}, errors.New("rtpstream: sdp: audio stream disabled (port 0)")
	}
	addr := media
	if !addr.IsValid() {
		addr = session
	}
	if !addr.IsValid() {
		return Media{}, errors.New("rtpstream: sdp: no connection address for the audio stream")
	}
	m.Addr = netip.AddrPortFrom(addr, uint16(port))
	return m, nil
}

// connectionAddr parses the value of a c= line: "IN IP4 192.0.2.1".
func connectionAddr(v string) (netip.Addr, error) {
	fields := strings.Fields(v)
	if len(fields) != 3 || fields[0] != "IN" {
		return netip.Addr{}, fmt.Errorf("rtpstream: sdp: bad connection line %q", v)
	}
	host, _, _ := strings.Cut(fields[2], "/") // multicast TTL
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("rtpstream: sdp: connection address %q is not an IP address", host)
	}
	return a.Unmap(), nil
}
