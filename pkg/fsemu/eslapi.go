package fsemu

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// sofiaProfile is the name of the node's one SIP profile in `sofia status`
// and channel names.
const sofiaProfile = "external"

// ctlSyntax is the part of fsctl's usage the emulator implements.
const ctlSyntax = "[pause [inbound|outbound]|resume [inbound|outbound]|pause_check [inbound|outbound]|ready_check|shutdown_check|shutdown [cancel|elegant|asap|now]|max_sessions [num]]"

// api runs an `api` (or `bgapi`) command line and returns its output, as
// mod_commands would write it. after, when set, must run once the output
// is on its way (fsctl shutdown stops the node).
func (s *eslServer) api(line string) (out string, after func()) {
	name, arg, _ := strings.Cut(line, " ")
	switch name {
	case "status":
		return s.status(), nil
	case "show":
		return s.show(arg), nil
	case "fsctl":
		return s.fsctl(arg)
	case "sofia":
		return s.sofia(arg), nil
	case "version":
		return "FreeSWITCH Version " + s.core.version + " ( " + versionBits(s.core.version) + ")\n", nil
	case "uptime":
		return s.uptime(arg), nil
	case "hostname":
		return s.core.hostname, nil
	}
	return "-ERR " + name + " Command not found!\n", nil
}

// ready is switch_core_ready: false when fully paused or shutting down.
func (s *eslServer) ready() bool {
	a := s.n.adm
	return !(a.pausedIn.Load() && a.pausedOut.Load()) && !s.n.stopping.Load()
}

// status is mod_commands' status_function.
func (s *eslServer) status() string {
	f := s.core.figures(int64(s.n.MaxSessions()))
	ready := "ready"
	if !s.ready() {
		ready = "not ready"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "UP %s\n", formatUptime(f.uptime))
	fmt.Fprintf(&b, "FreeSWITCH (Version %s) is %s\n", humanVersion(s.core.version), ready)
	fmt.Fprintf(&b, "%d session(s) since startup\n", f.total)
	fmt.Fprintf(&b, "%d session(s) - peak %d, last 5min %d \n", f.sessions, f.peak, f.peak5)
	fmt.Fprintf(&b, "%d session(s) per Sec out of max %d, peak %d, last 5min %d \n", f.spsLast, f.spsConfigured, f.spsPeak, f.spsPeak5)
	fmt.Fprintf(&b, "%d session(s) max\n", f.maxSessions)
	fmt.Fprintf(&b, "min idle cpu %0.2f/%0.2f\n", 0.0, f.idleCPU)
	b.WriteString("Current Stack Size/Max 240K/8192K\n")
	return b.String()
}

// show implements `show calls|channels count` and `show calls|channels as
// json`. Each call is one channel, so calls and channels agree.
func (s *eslServer) show(arg string) string {
	w := strings.Fields(strings.ToLower(arg))
	if len(w) >= 2 && (w[0] == "calls" || w[0] == "channels") {
		switch {
		case len(w) == 2 && w[1] == "count":
			return "\n" + strconv.Itoa(s.n.Active()) + " total.\n"
		case len(w) == 3 && w[1] == "as" && w[2] == "json":
			return s.n.channelsJSON()
		}
	}
	return "-USAGE: calls count|channels count|calls as json|channels as json\n"
}

// fsctl implements the fsctl sub-commands that matter to a balancer.
func (s *eslServer) fsctl(arg string) (string, func()) {
	argv := strings.Fields(arg)
	if len(argv) == 0 {
		return "-USAGE: " + ctlSyntax + "\n", nil
	}
	a := s.n.adm
	dir := ""
	if len(argv) > 1 {
		dir = strings.ToLower(argv[1])
	}
	switch strings.ToLower(argv[0]) {
	case "pause", "resume":
		v := strings.EqualFold(argv[0], "pause")
		switch dir {
		case "inbound":
			a.pausedIn.Store(v)
		case "outbound":
			a.pausedOut.Store(v)
		default:
			a.pausedIn.Store(v)
			a.pausedOut.Store(v)
		}
		return "+OK\n", nil
	case "pause_check":
		var v bool
		switch dir {
		case "inbound":
			v = a.pausedIn.Load()
		case "outbound":
			v = a.pausedOut.Load()
		default:
			v = a.pausedIn.Load() && a.pausedOut.Load()
		}
		return strconv.FormatBool(v), nil
	case "ready_check":
		return strconv.FormatBool(s.ready()), nil
	case "shutdown_check":
		return strconv.FormatBool(s.shutdownRequested.Load()), nil
	case "max_sessions":
		if len(argv) > 1 {
			if v, err := strconv.Atoi(argv[1]); err == nil && v > 0 {
				s.n.SetMaxSessions(v)
			}
		}
		limit := s.n.MaxSessions()
		if limit == 0 {
			limit = defaultMaxSessionsShown
		}
		return "+OK max sessions: " + strconv.Itoa(limit) + "\n", nil
	case "shutdown":
		return s.fsctlShutdown(argv[1:])
	}
	return "-ERR INVALID COMMAND\nUSAGE: fsctl " + ctlSyntax, nil
}

// fsctlShutdown is `fsctl shutdown [cancel|elegant|asap|now]`. Plain
// shutdown stops the node at once (SHUTDOWN event, notices, SIP closed).
// elegant waits for the calls to end first while still taking new ones;
// asap also pauses; cancel stops such a wait. now stops without notices,
// like a process that exits.
func (s *eslServer) fsctlShutdown(args []string) (string, func()) {
	mode := ""
	for _, a := range args {
		switch a = strings.ToLower(a); a {
		case "cancel":
			s.shutdownRequested.Store(false)
			return "+OK\n", nil
		case "elegant", "asap", "now":
			mode = a
		}
	}
	stop := func() { go func() { _ = s.n.Close() }() }
	switch mode {
	case "now":
		s.abrupt.Store(true)
		return "+OK\n", stop
	case "elegant", "asap":
		info := "elegant"
		if mode == "asap" {
			info = "ASAP"
			s.n.adm.pausedIn.Store(true)
			s.n.adm.pausedOut.Store(true)
		}
		s.shutdownRequested.Store(true)
		s.fire("SHUTDOWN_REQUESTED", func(seq uint64, now time.Time) *eslEvent {
			e := s.newEvent("SHUTDOWN_REQUESTED", siteShutdownRequested, seq, now)
			e.add("Event-Info", info)
			return e
		})
		switch s.waitIdle() {
		case waitIdle:
			return "+OK\n", stop
		case waitCancelled:
			// FreeSWITCH clears SCF_NO_NEW_SESSIONS: "Shutdown Cancelled".
			s.n.adm.pausedIn.Store(false)
			s.n.adm.pausedOut.Store(false)
		}
		return "+OK\n", nil
	}
	return "+OK\n", stop
}

var siteShutdownRequested = callingSite{"switch_core.c", "switch_core_session_ctl", 2825}

// How a wait for an elegant shutdown ended.
const (
	waitIdle      = iota // no call left
	waitCancelled        // fsctl shutdown cancel
	waitStopped          // the node stopped meanwhile
)

// waitIdle waits until no call is left, the shutdown is cancelled or the
// server stops. It polls, like FreeSWITCH's own loop over the session
// count.
func (s *eslServer) waitIdle() int {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if !s.shutdownRequested.Load() {
			return waitCancelled
		}
		if s.n.Active() == 0 {
			return waitIdle
		}
		select {
		case <-t.C:
		case <-s.stop:
			return waitStopped
		}
	}
}

// sofia implements `sofia status`: the profile table of mod_sofia.c's
// cmd_status with the node's one profile, RUNNING or DOWN with its calls.
func (s *eslServer) sofia(arg string) string {
	if !strings.EqualFold(strings.TrimSpace(arg), "status") {
		return "-ERR fsemu implements only: sofia status\n"
	}
	const line = "================================================================================================="
	state := "RUNNING"
	if s.n.adm.profileDown.Load() {
		state = "DOWN"
	}
	url := "sip:mod_sofia@" + net.JoinHostPort(s.n.host, strconv.Itoa(s.n.port))
	var b strings.Builder
	fmt.Fprintf(&b, "%25s\t%s\t  %40s\t%s\n", "Name", "   Type", "Data", "State")
	b.WriteString(line + "\n")
	fmt.Fprintf(&b, "%25s\t%s\t  %40s\t%s (%d)\n", sofiaProfile, "profile", url, state, s.n.Active())
	b.WriteString(line + "\n")
	b.WriteString("1 profile 0 aliases\n")
	return b.String()
}

// uptime is `uptime [us|ms|s|m|h|d]`, seconds by default.
func (s *eslServer) uptime(arg string) string {
	scale := map[string]time.Duration{
		"": time.Second, "us": time.Microsecond, "microseconds": time.Microsecond,
		"ms": time.Millisecond, "milliseconds": time.Millisecond, "s": time.Second, "seconds": time.Second,
		"m": time.Minute, "minutes": time.Minute, "h": time.Hour, "hours": time.Hour,
		"d": 24 * time.Hour, "days": 24 * time.Hour,
	}
	unit, ok := scale[strings.ToLower(strings.TrimSpace(arg))]
	if !ok {
		return "-ERR Invalid uptime scale\n"
	}
	return strconv.FormatInt(int64(time.Since(s.core.started)/unit), 10) + "\n"
}
