package guard

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// The seed corpora live in testdata/fuzz/<Fuzz name>/, so plain `go test`
// replays them; `make fuzz` runs each target for a bounded time.

// fuzzLimits are small enough that the fuzzer reaches every limit.
var fuzzLimits = MessageLimits{MaxBytes: 1500, MaxHeaders: 12, MaxHeaderBytes: 120, MaxVias: 3}

// FuzzReadFilter drives the UDP read filter's inspection over arbitrary
// datagrams: it must never panic, its answer must not depend on the limits
// it was not asked about, and a datagram it passes must be within every
// limit as the stream scanner measures it too.
func FuzzReadFilter(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		d := InspectDatagram(data, fuzzLimits)
		off := InspectDatagram(data, MessageLimits{})
		if off.Reason != ReasonNone {
			t.Fatalf("limits off, refused: %v", off.Reason)
		}
		if off.Request != d.Request || off.Invite != d.Invite || off.KeepAlive != d.KeepAlive {
			t.Fatalf("classification depends on the limits: %+v vs %+v", d, off)
		}
		if d.Reason == ReasonNone && !d.KeepAlive && len(data) > fuzzLimits.MaxBytes {
			t.Fatalf("passed %d bytes over max_bytes", len(data))
		}
		if d.Reason == ReasonNone && d.ToTag != off.ToTag {
			t.Fatalf("To tag depends on the limits")
		}
		if d.ToTag && !(d.Request && d.Invite) {
			t.Fatalf("To tag outside an INVITE: %+v", d)
		}
	})
}

// FuzzStreamScanner checks the TCP stream scanner: its verdict and the
// message boundaries it finds do not depend on how the stream is cut into
// reads, and on any stream sipgo's own stream parser frames without error,
// it finds the same messages and refuses nothing (limits off).
func FuzzStreamScanner(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r0, m0 := feedChunks(fuzzLimits, data, 0)
		for _, n := range []int{1, 2, 3, 5, 13, 100} {
			r, m := feedChunks(fuzzLimits, data, n)
			if r != r0 || m != m0 {
				t.Fatalf("chunks of %d: %v/%d messages, whole: %v/%d", n, r, m, r0, m0)
			}
		}
		// Against sipgo, for the streams our documented strictness leaves
		// alike: no bare LF (sipgo folds it into the line) and ASCII only
		// (sipgo trims Unicode spaces around a Content-Length).
		if hasBareLF(data) || hasNonASCII(data) || len(data) > 60000 {
			return
		}
		ps := sip.NewParser().NewSIPStream()
		msgs := 0
		err := ps.ParseSIPStream(data, func(sip.Message) { msgs++ })
		if err != nil && !errors.Is(err, sip.ErrParseSipPartial) {
			return // sipgo refuses too: it closes the connection
		}
		r, m := feedChunks(MessageLimits{}, data, 0)
		// With a partial message left, sipgo waits for more: the scanner
		// may already refuse those octets (its documented strictness) but
		// must agree on every message before them.
		if m != msgs || (err == nil && r != ReasonNone) {
			t.Fatalf("sipgo framed %d messages (err %v); scanner: %v, %d messages", msgs, err, r, m)
		}
	})
}

func hasBareLF(b []byte) bool {
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			return true
		}
	}
	return false
}

func hasNonASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

// FuzzACLCheck compares the ACL's range tables with a plain scan of every
// prefix, over trunk lists and addresses made from the fuzzer's bytes.
func FuzzACLCheck(f *testing.F) {
	f.Add([]byte{10, 0, 0, 0, 8, 10, 1, 0, 0, 16, 0}, []byte{10, 1, 2, 3}, uint8(3))
	f.Add([]byte{192, 0, 2, 0, 24, 192, 0, 2, 128, 25, 1}, []byte{192, 0, 2, 200}, uint8(1))
	f.Add([]byte{0x20, 0x01, 0x0d, 0xb8, 32, 0, 0, 0, 0, 0}, []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, uint8(0))
	f.Fuzz(func(t *testing.T, spec, query []byte, conds uint8) {
		trunks, nodes := trunksFromBytes(spec, conds)
		acl, err := NewACL(trunks, nodes)
		if err != nil {
			t.Fatal(err)
		}
		var src netip.Addr
		switch len(query) {
		case 4:
			src = netip.AddrFrom4([4]byte(query))
		case 16:
			src = netip.AddrFrom16([16]byte(query))
		default:
			return
		}
		for _, ruri := range []string{"pbx.example.com", "other"} {
			for _, hv := range []string{"acme", ""} {
				hdr := headers("X-Trunk", hv)
				gotName, gotOK := acl.Check(src, ruri, hdr)
				wantName, wantOK := naiveCheck(trunks, nodes, src, ruri, hdr)
				if gotOK != wantOK || gotName != wantName {
					t.Fatalf("src %v ruri %q hdr %q: got %q/%v, want %q/%v (trunks %+v)", src, ruri, hv, gotName, gotOK, wantName, wantOK, trunks)
				}
			}
		}
	})
}

// trunksFromBytes reads records of 5 bytes (IPv4 address and prefix
// length) or, when the length byte is >= 33, 17 bytes (IPv6); every third
// record starts a new trunk; conds gives trunks R-URI and header
// conditions and the last record may be a node.
func trunksFromBytes(b []byte, conds uint8) ([]Trunk, []netip.Addr) {
	var trunks []Trunk
	var nodes []netip.Addr
	names := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	rec := 0
	for len(b) >= 5 && len(trunks) < len(names) {
		var p netip.Prefix
		if b[4] <= 32 {
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte(b[:4])), int(b[4])).Masked()
			b = b[5:]
		} else if len(b) >= 17 {
			p = netip.PrefixFrom(netip.AddrFrom16([16]byte(b[:16])), int(b[16])%129).Masked()
			b = b[17:]
		} else {
			break
		}
		if rec%3 == 0 {
			i := len(trunks)
			t := Trunk{Name: names[i]}
			if conds>>uint(i%4)&1 == 1 {
				t.RequestURIHost = "PBX.example.com"
			}
			if conds>>uint(4+i%4)&1 == 1 {
				t.Header, t.HeaderValue = "X-Trunk", "acme"
			}
			trunks = append(trunks, t)
		}
		tr := &trunks[len(trunks)-1]
		tr.CIDRs = append(tr.CIDRs, p)
		rec++
	}
	if len(b) > 0 && b[0]&1 == 1 && len(trunks) > 0 {
		nodes = append(nodes, trunks[0].CIDRs[0].Addr())
	}
	return trunks, nodes
}

// addSeeds adds our test messages to a SIP corpus. The corpus files in
// testdata/fuzz/<target>/ add every RFC 4475 message (rfc4475-*), a few
// crafted streams (synthetic-*) and inputs the fuzzer found (fuzzer-*).
func addSeeds(f *testing.F) {
	f.Add(crlf(invite))
	f.Add(bytes.Repeat(crlf(invite), 2))
	f.Add(crlf("BYE sip:a@b SIP/2.0\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\nTo: <sip:a@b>;tag=1\nContent-Length: 0\n\n"))
	f.Add([]byte("\r\n\r\n"))
}
