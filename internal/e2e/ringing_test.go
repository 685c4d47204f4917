package e2e

import (
	"bytes"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"

	"github.com/sipbalancer/sipbalancer/pkg/fsemu"
)

// TestRingingBeforeAnswer: a node that sends 100, 180 and 200 back to back
// (fsemu with no ring or answer delay, like an auto-answering FreeSWITCH
// extension) gets every 180 to the caller, and before the 200. sipgo
// handles each datagram in a goroutine of its own, so the 180 and the 200
// read one after the other often reach the INVITE transaction in reverse
// order, which then drops the 180; the balancer restores the order from
// what its transport read (branch.recoverRinging). The caller reads its
// socket in one loop, so the order it records is the order the balancer
// sent.
func TestRingingBeforeAnswer(t *testing.T) {
	c := startCluster(t, clusterOpts{nodes: 1})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { pc.Close() })
	_ = pc.(*net.UDPConn).SetReadBuffer(4 << 20) // up to net.core.rmem_max
	dst, err := net.ResolveUDPAddr("udp", c.addr("udp"))
	require.NoError(t, err)

	var mu sync.Mutex
	seen := map[string][]int{} // Call-ID -> status codes in arrival order
	answered := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			msg, err := sip.ParseMessage(append([]byte(nil), buf[:n]...))
			if err != nil {
				continue
			}
			res, ok := msg.(*sip.Response)
			if !ok || res.CallID() == nil {
				continue
			}
			id := string(*res.CallID())
			if res.StatusCode == 200 {
				// ACK every 200 (retransmissions too), so that the node
				// stops retransmitting it: on a loaded machine those
				// retransmissions would fill this socket's buffer and
				// the kernel would drop a later call's 180 here.
				if ack := rawAck(res); ack != nil {
					_, _ = pc.WriteTo(ack, dst)
				}
			}
			mu.Lock()
			codes := seen[id]
			if res.StatusCode == 200 && !containsCode(codes, 200) {
				answered++
			}
			seen[id] = append(codes, res.StatusCode)
			mu.Unlock()
		}
	}()

	const calls = 600
	local := pc.LocalAddr().(*net.UDPAddr)
	for i := range calls {
		_, err := pc.WriteTo(rawInvite(local, i), dst)
		require.NoError(t, err)
		if i%25 == 24 {
			// Bursts of 25: enough for the balancer's reader to find
			// several datagrams waiting, without overflowing buffers.
			want := i + 1
			eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return answered >= want },
				"calls answered: want %d", want)
		}
	}

	mu.Lock()
	defer mu.Unlock()
	var bad []string
	for id, codes := range seen {
		first180, first200 := indexCode(codes, 180), indexCode(codes, 200)
		if first180 < 0 || first180 > first200 {
			bad = append(bad, fmt.Sprintf("%s: %v", id, codes))
		}
	}
	require.Len(t, seen, calls)
	require.Empty(t, bad, "calls whose 180 did not reach the caller before the 200")
	// The ACKs reached the node (so the test's own traffic stayed small).
	rec := c.waitRecord("ring-0@127.0.0.1", func(r fsemu.CallRecord) bool { return slices.Contains(r.Methods, "ACK") })
	require.True(t, rec.Answered)
	n, _ := metricValue(t, c, "sipbalancer_sip_ringing_reordered_total", nil)
	t.Logf("%d of %d 180s were handled after their 200 and relayed before it", int(n), calls)
}

func containsCode(codes []int, code int) bool { return indexCode(codes, code) >= 0 }

func indexCode(codes []int, code int) int {
	for i, c := range codes {
		if c == code {
			return i
		}
	}
	return -1
}

// rawInvite is an INVITE for call i from the caller at local, with SDP.
func rawInvite(local *net.UDPAddr, i int) []byte {
	sdp := "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
	var b bytes.Buffer
	host := local.String()
	fmt.Fprintf(&b, "INVITE sip:service@127.0.0.1 SIP/2.0\r\n")
	fmt.Fprintf(&b, "Via: SIP/2.0/UDP %s;branch=z9hG4bK-ring-%d;rport\r\n", host, i)
	fmt.Fprintf(&b, "Max-Forwards: 70\r\n")
	fmt.Fprintf(&b, "From: <sip:caller@127.0.0.1>;tag=ring%d\r\n", i)
	fmt.Fprintf(&b, "To: <sip:service@127.0.0.1>\r\n")
	fmt.Fprintf(&b, "Call-ID: ring-%d@127.0.0.1\r\n", i)
	fmt.Fprintf(&b, "CSeq: 1 INVITE\r\n")
	fmt.Fprintf(&b, "Contact: <sip:caller@%s>\r\n", host)
	fmt.Fprintf(&b, "Content-Type: application/sdp\r\n")
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(sdp), sdp)
	return b.Bytes()
}

// rawAck is the ACK for a 2xx answering rawInvite: to the 2xx's Contact,
// through the balancer by the route set, which for the caller is the 2xx's
// Record-Route list reversed (RFC 3261 §12.1.2).
func rawAck(res *sip.Response) []byte {
	contact := res.Contact()
	to := res.To()
	if contact == nil || to == nil || res.Via() == nil {
		return nil
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "ACK %s SIP/2.0\r\n", contact.Address.String())
	fmt.Fprintf(&b, "Via: SIP/2.0/UDP %s:%d;branch=z9hG4bK-ack-%s;rport\r\n", res.Via().Host, res.Via().Port, res.CallID().Value())
	rrs := res.GetHeaders("Record-Route")
	for i := len(rrs) - 1; i >= 0; i-- {
		fmt.Fprintf(&b, "Route: %s\r\n", rrs[i].Value())
	}
	fmt.Fprintf(&b, "Max-Forwards: 70\r\n")
	fmt.Fprintf(&b, "From: %s\r\n", res.From().Value())
	fmt.Fprintf(&b, "To: %s\r\n", to.Value())
	fmt.Fprintf(&b, "Call-ID: %s\r\n", res.CallID().Value())
	fmt.Fprintf(&b, "CSeq: 1 ACK\r\n")
	fmt.Fprintf(&b, "Content-Length: 0\r\n\r\n")
	return b.Bytes()
}
