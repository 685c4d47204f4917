// Package rtpstream is the RTP shared by the media probe (pkg/health), the
// FreeSWITCH emulator (pkg/fsemu) and the call generator (pkg/callgen):
// G.711 audio (PCMU or PCMA) packetised every 20 ms with
// github.com/pion/rtp, the receiving side's checks and figures, and a
// small UDP session that sends one stream and receives another.
//
//   - Sender (sender.go) makes the outgoing stream with pion/rtp's
//     Packetizer and G711Payloader: 160 samples (20 ms at 8 kHz) per
//     packet, a random SSRC, sequence number and timestamp, the marker bit
//     on the first packet only (the start of a talkspurt, RFC 3551 §4.1).
//     The payload is a 400 Hz tone, so the stream is real audio; a Sender
//     for a probe also writes a tag into the first bytes of each payload
//     (a per-stream nonce and the packet's index) so that an echo of the
//     packet can be recognised whatever header the far end gives it (a
//     FreeSWITCH echo sends the caller's payload back with its own SSRC,
//     sequence numbers and timestamps).
//   - Receiver (receiver.go) follows an incoming stream as RFC 3550
//     Appendix A.1 and A.8 describe: extended sequence numbers across
//     wraps, expected and lost packets, duplicates and late (reordered)
//     packets, timestamp steps that do not match the sequence step, SSRC
//     changes, and the interarrival jitter estimate J += (|D| - J) / 16.
//   - Session (session.go) binds one UDP socket, sends the Sender's stream
//     to the far end's address every 20 ms and feeds what arrives to a
//     Receiver; echoes of its own packets give loss and round-trip time.
//   - ParseSDP (sdp.go) reads the audio address and formats of an SDP
//     body: enough to know where to send.
//
// Every goroutine a Session starts ends when it is closed, and every wait
// it makes is bounded.
package rtpstream
