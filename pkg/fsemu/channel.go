package fsemu

import (
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// channel is what the Event Socket tells about an admitted call: one
// inbound FreeSWITCH channel per call (the emulator bridges nothing, so a
// call is one channel and `show calls count` equals `show channels count`).
// It is kept only while the call is up, and only when the node serves ESL.
type channel struct {
	uuid      string
	name      string // sofia/<profile>/<from user>@<from host>
	callID    string
	fromUser  string
	fromHost  string
	fromName  string
	toUser    string
	dest      string // Request-URI user
	netIP     string
	netPort   string
	userAgent string
	sessionID int64
	created   time.Time
	answered  time.Time
}

func newChannel(req *sip.Request, sessionID int64) *channel {
	ch := &channel{
		uuid:      newUUID(),
		callID:    callIDOf(req),
		dest:      req.Recipient.User,
		sessionID: sessionID,
		created:   time.Now(),
	}
	if from := req.From(); from != nil {
		ch.fromUser, ch.fromHost, ch.fromName = from.Address.User, from.Address.Host, from.DisplayName
		if from.Address.Port > 0 {
			ch.fromHost = net.JoinHostPort(ch.fromHost, strconv.Itoa(from.Address.Port))
		}
	}
	if to := req.To(); to != nil {
		ch.toUser = to.Address.User
	}
	if ch.fromName == "" {
		ch.fromName = ch.fromUser
	}
	ch.netIP, ch.netPort, _ = net.SplitHostPort(req.Source())
	if ua := req.GetHeader("User-Agent"); ua != nil {
		ch.userAgent = ua.Value()
	}
	ch.name = "sofia/" + sofiaProfile + "/" + ch.fromUser + "@" + ch.fromHost
	return ch
}

// channelCreatedLocked opens the ESL channel of a call just admitted and
// fires CHANNEL_CREATE. Called under c.mu, so that the hang-up event of the
// same call cannot overtake it.
func (n *Node) channelCreatedLocked(c *call, req *sip.Request) {
	total := n.core.sessionCreated(n.adm.active.Load())
	s := n.esl
	if s == nil {
		return
	}
	ch := newChannel(req, total)
	c.ch = ch
	s.fire("CHANNEL_CREATE", func(seq uint64, now time.Time) *eslEvent {
		return s.channelEvent("CHANNEL_CREATE", siteChannelCreate, seq, now, ch, "")
	})
}

// channelHangupLocked fires CHANNEL_HANGUP_COMPLETE for a call that had a
// channel, with the cause matching why it ended. Called under c.mu.
func (n *Node) channelHangupLocked(c *call, reason string) {
	ch := c.ch
	c.ch = nil
	s := n.esl
	if ch == nil || s == nil {
		return
	}
	s.fire("CHANNEL_HANGUP_COMPLETE", func(seq uint64, now time.Time) *eslEvent {
		return s.channelEvent("CHANNEL_HANGUP_COMPLETE", siteChannelHangup, seq, now, ch, reason)
	})
}

// hangupCause maps a call's end reason to FreeSWITCH's hangup cause and
// sip_hangup_disposition.
func hangupCause(reason string) (cause, disposition string) {
	switch reason {
	case EndCancel:
		return "ORIGINATOR_CANCEL", "recv_cancel"
	case EndCallerBye:
		return "NORMAL_CLEARING", "recv_bye"
	case EndHold:
		return "NORMAL_CLEARING", "send_bye"
	case EndAckTimeout:
		return "RECOVERY_ON_TIMER_EXPIRE", "send_bye"
	case EndEvicted:
		return "MANAGER_REQUEST", "send_bye"
	default:
		return "NORMAL_TEMPORARY_FAILURE", "send_refuse"
	}
}

// channelEvent builds a channel event with the headers of a real inbound
// mod_sofia channel that a balancer may look at: channel state, the caller
// profile and a few channel variables. reason is set for the hang-up.
func (s *eslServer) channelEvent(name string, site callingSite, seq uint64, now time.Time, ch *channel, reason string) *eslEvent {
	e := s.newEvent(name, site, seq, now)
	us := func(t time.Time) string {
		if t.IsZero() {
			return "0"
		}
		return strconv.FormatInt(t.UnixMicro(), 10)
	}
	hangup := reason != ""
	state, stateNum, callState, answerState := "CS_INIT", "1", "DOWN", "ringing"
	if hangup {
		state, stateNum, callState, answerState = "CS_REPORTING", "11", "HANGUP", "hangup"
	}
	e.add("Channel-State", state)
	e.add("Channel-Call-State", callState)
	e.add("Channel-State-Number", stateNum)
	e.add("Channel-Name", ch.name)
	e.add("Unique-ID", ch.uuid)
	e.add("Call-Direction", "inbound")
	e.add("Presence-Call-Direction", "inbound")
	e.add("Channel-HIT-Dialplan", "true")
	e.add("Channel-Call-UUID", ch.uuid)
	e.add("Answer-State", answerState)
	var cause, disposition string
	if hangup {
		cause, disposition = hangupCause(reason)
		e.add("Hangup-Cause", cause)
	}
	e.add("Caller-Direction", "inbound")
	e.add("Caller-Logical-Direction", "inbound")
	e.add("Caller-Username", ch.fromUser)
	e.add("Caller-Dialplan", "XML")
	e.add("Caller-Caller-ID-Name", ch.fromName)
	e.add("Caller-Caller-ID-Number", ch.fromUser)
	e.add("Caller-Orig-Caller-ID-Name", ch.fromName)
	e.add("Caller-Orig-Caller-ID-Number", ch.fromUser)
	e.add("Caller-Network-Addr", ch.netIP)
	e.add("Caller-ANI", ch.fromUser)
	e.add("Caller-Destination-Number", ch.dest)
	e.add("Caller-Unique-ID", ch.uuid)
	e.add("Caller-Source", "mod_sofia")
	e.add("Caller-Context", "public")
	e.add("Caller-Channel-Name", ch.name)
	e.add("Caller-Profile-Index", "1")
	e.add("Caller-Profile-Created-Time", us(ch.created))
	e.add("Caller-Channel-Created-Time", us(ch.created))
	e.add("Caller-Channel-Answered-Time", us(ch.answered))
	e.add("Caller-Channel-Progress-Time", "0")
	e.add("Caller-Channel-Progress-Media-Time", "0")
	if hangup {
		e.add("Caller-Channel-Hangup-Time", us(now))
	} else {
		e.add("Caller-Channel-Hangup-Time", "0")
	}
	e.add("Caller-Channel-Transfer-Time", "0")
	e.add("Caller-Channel-Resurrect-Time", "0")
	e.add("Caller-Channel-Bridged-Time", "0")
	e.add("Caller-Channel-Last-Hold", "0")
	e.add("Caller-Channel-Hold-Accum", "0")
	e.add("Caller-Screen-Bit", "true")
	e.add("Caller-Privacy-Hide-Name", "false")
	e.add("Caller-Privacy-Hide-Number", "false")
	e.add("variable_direction", "inbound")
	e.add("variable_uuid", ch.uuid)
	e.add("variable_call_uuid", ch.uuid)
	e.add("variable_session_id", strconv.FormatInt(ch.sessionID, 10))
	e.add("variable_sip_from_user", ch.fromUser)
	e.add("variable_sip_from_host", ch.fromHost)
	e.add("variable_sip_to_user", ch.toUser)
	e.add("variable_sip_req_user", ch.dest)
	e.add("variable_sip_network_ip", ch.netIP)
	e.add("variable_sip_network_port", ch.netPort)
	e.add("variable_sip_call_id", ch.callID)
	if ch.userAgent != "" {
		e.add("variable_sip_user_agent", ch.userAgent)
	}
	e.add("variable_sofia_profile_name", sofiaProfile)
	if hangup {
		billsec := int64(0)
		if !ch.answered.IsZero() {
			billsec = int64(now.Sub(ch.answered) / time.Second)
		}
		e.add("variable_sip_hangup_disposition", disposition)
		e.add("variable_hangup_cause", cause)
		e.add("variable_duration", strconv.FormatInt(int64(now.Sub(ch.created)/time.Second), 10))
		e.add("variable_billsec", strconv.FormatInt(billsec, 10))
	}
	return e
}

// channelsJSON is `show calls as json`: {"row_count": 0} when idle, as
// FreeSWITCH prints it, else the row count and one row per channel with
// the main columns of its basic_calls view.
func (n *Node) channelsJSON() string {
	var rows []string
	for _, c := range n.calls.all() {
		c.mu.Lock()
		ch := c.ch
		answered := c.rec.Answered
		c.mu.Unlock()
		if ch == nil {
			continue
		}
		callState := "RINGING"
		if answered {
			callState = "ACTIVE"
		}
		var b strings.Builder
		b.WriteByte('{')
		for i, kv := range [][2]string{
			{"uuid", ch.uuid}, {"direction", "inbound"},
			{"created", ch.created.Format("2006-01-02 15:04:05")},
			{"created_epoch", strconv.FormatInt(ch.created.Unix(), 10)},
			{"name", ch.name}, {"state", "CS_EXECUTE"},
			{"cid_name", ch.fromName}, {"cid_num", ch.fromUser},
			{"ip_addr", ch.netIP}, {"dest", ch.dest},
			{"callstate", callState}, {"call_uuid", ch.uuid},
			{"hostname", n.core.hostname},
		} {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSONString(&b, kv[0])
			b.WriteByte(':')
			writeJSONString(&b, kv[1])
		}
		b.WriteByte('}')
		rows = append(rows, b.String())
	}
	if len(rows) == 0 {
		return "{\"row_count\": 0}\n"
	}
	return "{\"row_count\":" + strconv.Itoa(len(rows)) + ",\"rows\":[" + strings.Join(rows, ",") + "]}\n"
}
