package fsemu

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Texts of the disconnect notices (mod_event_socket.c 673-683, 2813).
const (
	noticeGoodbye    = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
	noticeShutdown   = "The system is being shut down.\n"
	noticeLostEvents = "killed listener because of lost events\n"
)

// Limits and timings of the Event Socket server. The fields of eslServer
// carry them so tests can shrink them.
const (
	// eslQueueLen is mod_event_socket's MAX_QUEUE_LEN: events waiting for
	// one connection.
	eslQueueLen = 100000
	// eslMaxLost is MAX_MISSED: a connection that loses more events than
	// this in a row is killed.
	eslMaxLost = 500
	// eslMaxHeader bounds a command's header block; eslMaxBody its
	// Content-Length body (FreeSWITCH master's cap).
	eslMaxHeader = 1 << 20
	eslMaxBody   = 16 << 20
	// eslCloseGrace is how long Close lets connections deliver their
	// SHUTDOWN event and notice before it cuts them.
	eslCloseGrace = 2 * time.Second
	// eslKillGrace is how long a killed connection has to take its notice.
	eslKillGrace = 5 * time.Second
)

var errCommandTooLarge = errors.New("esl command too large")

// eslLimits are the server's bounds and timeouts; tests shrink them.
type eslLimits struct {
	authTimeout time.Duration
	queueLen    int
	maxLost     int
	maxHeader   int
	maxBody     int
	closeGrace  time.Duration
	killGrace   time.Duration
}

// eslServer is the node's Event Socket in inbound mode, as
// mod_event_socket serves it: authenticated TCP connections that run `api`
// commands against the node's state and receive the events they subscribe
// to (HEARTBEAT, channel events, BACKGROUND_JOB, SHUTDOWN).
//
// Each connection has two goroutines: a reader that parses commands, and a
// writer that executes them and writes replies and queued events, so an
// event never lands inside a reply. Events are queued per connection and
// dropped when the queue is full; past eslMaxLost drops in a row the
// connection is killed, as FreeSWITCH does.
type eslServer struct {
	n    *Node
	core *core
	ln   net.Listener

	password   string
	heartbeat  time.Duration
	switchname string

	// mu orders fired events (Event-Sequence) and guards the fields below.
	mu         sync.Mutex
	seq        uint64
	conns      map[*eslConn]struct{}
	closing    bool
	ipv4, ipv6 string    // set by start
	lim        eslLimits // copied by each connection when accepted

	stop     chan struct{} // closed when the server shuts down
	abrupt   atomic.Bool   // shut down without notices (fsctl shutdown now)
	shutOnce sync.Once
	wg       sync.WaitGroup

	// shutdownRequested is SCF_SHUTDOWN_REQUESTED: an elegant or asap
	// shutdown waits for the calls to end.
	shutdownRequested atomic.Bool
}

// listenESL binds the Event Socket listener; start serves it.
func (n *Node) listenESL() error {
	ln, err := net.Listen("tcp", n.cfg.ESLAddr)
	if err != nil {
		return fmt.Errorf("fsemu: listen esl %s: %w", n.cfg.ESLAddr, err)
	}
	n.esl = &eslServer{
		n:          n,
		core:       n.core,
		ln:         ln,
		password:   n.cfg.ESLPassword,
		heartbeat:  n.cfg.HeartbeatInterval,
		switchname: n.cfg.ID,
		conns:      make(map[*eslConn]struct{}),
		stop:       make(chan struct{}),
		lim: eslLimits{
			authTimeout: n.cfg.ESLAuthTimeout,
			queueLen:    eslQueueLen,
			maxLost:     eslMaxLost,
			maxHeader:   eslMaxHeader,
			maxBody:     eslMaxBody,
			closeGrace:  eslCloseGrace,
			killGrace:   eslKillGrace,
		},
	}
	return nil
}

// start serves the listener once the SIP side is up (its address goes into
// events). The first HEARTBEAT fires at once, before anyone can subscribe,
// as at FreeSWITCH's core start.
func (s *eslServer) start() {
	ipv4, ipv6 := "127.0.0.1", "::1"
	if ip := net.ParseIP(s.n.host); ip != nil && ip.To4() == nil {
		ipv4, ipv6 = advertiseHost(net.IPv4zero), ip.String()
	} else if ip != nil {
		ipv4 = ip.String()
	}
	s.mu.Lock()
	s.ipv4, s.ipv6 = ipv4, ipv6
	s.mu.Unlock()
	s.fire("HEARTBEAT", s.heartbeatEvent)
	s.wg.Add(2)
	go s.acceptLoop()
	go s.heartbeatLoop()
	s.n.log.Info("esl listening", "addr", s.addr())
}

func (s *eslServer) addr() string { return s.ln.Addr().String() }

func (s *eslServer) acceptLoop() {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.stop:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors and the like: wait a little, as
			// net/http does, rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.n.log.Warn("esl accept failed", "error", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-s.stop:
				return
			}
			continue
		}
		backoff = 0
		c := &eslConn{
			s:    s,
			conn: conn,
			bw:   bufio.NewWriterSize(conn, 64<<10),
			cmds: make(chan *eslCommand),
			done: make(chan struct{}),
			wake: make(chan struct{}, 1),
			kill: make(chan struct{}),
			subs: make(map[string]bool),
		}
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			conn.Close()
			continue
		}
		s.conns[c] = struct{}{}
		c.lim = s.lim
		s.wg.Add(2)
		s.mu.Unlock()
		go c.serve()
		go c.readLoop()
	}
}

func (s *eslServer) heartbeatLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.heartbeat)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.fire("HEARTBEAT", s.heartbeatEvent)
		case <-s.stop:
			return
		}
	}
}

// fire takes the next Event-Sequence number for an event called name and,
// when a connection wants it, builds it and queues it there. It never
// blocks on a connection, so SIP handlers may fire under their call lock.
func (s *eslServer) fire(name string, build func(seq uint64, now time.Time) *eslEvent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	var ev *eslEvent
	for c := range s.conns {
		if !c.wants(name) {
			continue
		}
		if ev == nil {
			ev = build(s.seq, time.Now())
		}
		c.enqueue(ev)
	}
}

// shutdown fires SHUTDOWN, tells every connection "The system is being
// shut down." and closes the listener so new connections are refused. It
// returns once every goroutine of the server has ended.
func (s *eslServer) shutdown() {
	s.shutOnce.Do(func() {
		if !s.abrupt.Load() {
			s.fire("SHUTDOWN", func(seq uint64, now time.Time) *eslEvent {
				e := s.newEvent("SHUTDOWN", siteShutdown, seq, now)
				e.add("Event-Info", "System Shutting Down")
				return e
			})
		}
		s.mu.Lock()
		s.closing = true
		closeGrace := s.lim.closeGrace
		conns := make([]*eslConn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		_ = s.ln.Close()
		close(s.stop)

		done := make(chan struct{})
		go func() {
			s.wg.Wait()
			close(done)
		}()
		grace := time.NewTimer(closeGrace)
		defer grace.Stop()
		select {
		case <-done:
		case <-grace.C:
			// Connections stuck writing to peers that do not read.
			for _, c := range conns {
				_ = c.conn.Close()
			}
			<-done
		}
	})
}

func (s *eslServer) connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// eslConn is one Event Socket connection.
type eslConn struct {
	s    *eslServer
	lim  eslLimits
	conn net.Conn
	bw   *bufio.Writer // written by serve only
	cmds chan *eslCommand
	done chan struct{} // closed when serve returns

	// Owned by serve.
	authed bool
	format eventFormat

	mu      sync.Mutex
	all     bool            // event ALL
	subs    map[string]bool // event names
	filters []eslHeader
	queue   []*eslEvent
	lost    int // events dropped in a row
	killed  bool
	closed  bool
	wake    chan struct{} // an event was queued
	kill    chan struct{} // closed when too many events were lost
}

// eslCommand is one command block: the command line, its headers and an
// optional Content-Length body.
type eslCommand struct {
	line    string
	headers []eslHeader
	body    []byte
}

func (c *eslCommand) header(name string) string {
	for _, h := range c.headers {
		if strings.EqualFold(h.name, name) {
			return h.value
		}
	}
	return ""
}

// readLoop parses commands and hands them to serve, until the connection
// fails or closes.
func (c *eslConn) readLoop() {
	defer c.s.wg.Done()
	defer close(c.cmds)
	r := bufio.NewReader(c.conn)
	for {
		cmd, err := readCommand(r, c.lim.maxHeader, c.lim.maxBody)
		if err != nil {
			if errors.Is(err, errCommandTooLarge) {
				c.s.n.log.Warn("esl command too large, closing", "peer", c.conn.RemoteAddr().String())
			}
			return
		}
		select {
		case c.cmds <- cmd:
		case <-c.done:
			return
		}
	}
}

// readCommand reads one command block like mod_event_socket's read_packet:
// leading empty lines are skipped, lines end in LF with an optional CR, an
// empty line ends the block, and a Content-Length header brings a body.
func readCommand(r *bufio.Reader, maxHeader, maxBody int) (*eslCommand, error) {
	cmd := &eslCommand{}
	size := 0
	for {
		line, err := readLine(r, &size, maxHeader)
		if err != nil {
			if cmd.line != "" && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if cmd.line == "" {
			if line != "" {
				cmd.line = line
			}
			continue
		}
		if line == "" {
			break
		}
		name, value, _ := strings.Cut(line, ":")
		cmd.headers = append(cmd.headers, eslHeader{name, strings.TrimLeft(value, " ")})
	}
	if cl := cmd.header("Content-Length"); cl != "" {
		n, err := strconv.Atoi(strings.TrimSpace(cl))
		if err != nil || n < 0 {
			n = 0
		}
		if n > maxBody {
			return nil, errCommandTooLarge
		}
		if n > 0 {
			cmd.body = make([]byte, n)
			if _, err := io.ReadFull(r, cmd.body); err != nil {
				return nil, err
			}
		}
	}
	return cmd, nil
}

// readLine returns the next line without its LF and trailing CR; size
// counts the bytes of the command block so far.
func readLine(r *bufio.Reader, size *int, limit int) (string, error) {
	var long []byte
	for {
		frag, err := r.ReadSlice('\n')
		*size += len(frag)
		if *size > limit {
			return "", errCommandTooLarge
		}
		switch {
		case err == nil:
			if long != nil {
				frag = append(long, frag...)
			}
			line := strings.TrimSuffix(string(frag[:len(frag)-1]), "\r")
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			long = append(long, frag...)
		default:
			return "", err
		}
	}
}

// serve runs the connection: greeting, commands in order, and the events
// queued for it in between.
func (c *eslConn) serve() {
	defer c.s.wg.Done()
	defer c.finish()

	c.bw.WriteString("Content-Type: auth/request\n\n")
	if c.bw.Flush() != nil {
		return
	}
	auth := time.NewTimer(c.lim.authTimeout)
	defer auth.Stop()
	authC := auth.C
	for {
		end := false
		select {
		case cmd, ok := <-c.cmds:
			if !ok {
				// EOF or a read error: FreeSWITCH says goodbye anyway.
				c.notice(noticeGoodbye)
				return
			}
			end = c.handle(cmd)
			if c.authed {
				authC = nil
			} else {
				// The pre-auth timeout runs per command (read_packet's 25 s).
				auth.Reset(c.lim.authTimeout)
			}
		case <-c.wake:
			c.writeEvents()
		case <-authC:
			c.notice(noticeGoodbye)
			return
		case <-c.kill:
			c.notice(noticeLostEvents)
			return
		case <-c.s.stop:
			if c.s.abrupt.Load() {
				return
			}
			c.writeEvents()
			c.notice(noticeShutdown)
			return
		}
		if end || c.bw.Flush() != nil {
			return
		}
	}
}

// finish closes the connection and forgets it.
func (c *eslConn) finish() {
	c.mu.Lock()
	c.closed = true
	c.queue = nil
	c.mu.Unlock()
	_ = c.conn.Close()
	close(c.done)
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.mu.Unlock()
}

func (c *eslConn) reply(text string) {
	c.bw.WriteString("Content-Type: command/reply\nReply-Text: ")
	c.bw.WriteString(text)
	c.bw.WriteString("\n\n")
}

func (c *eslConn) apiResponse(body string) {
	c.bw.WriteString("Content-Type: api/response\nContent-Length: ")
	c.bw.WriteString(strconv.Itoa(len(body)))
	c.bw.WriteString("\n\n")
	c.bw.WriteString(body)
}

// notice writes a disconnect notice; the connection closes after it.
func (c *eslConn) notice(text string) {
	c.bw.WriteString("Content-Type: text/disconnect-notice\nContent-Length: ")
	c.bw.WriteString(strconv.Itoa(len(text)))
	c.bw.WriteString("\n\n")
	c.bw.WriteString(text)
	_ = c.bw.Flush()
}

// wants reports whether the connection subscribed to events called name.
func (c *eslConn) wants(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.closed && !c.killed && (c.all || c.subs[name])
}

// enqueue queues ev unless a filter rejects it. A full queue drops it;
// more than maxLost drops in a row kill the connection.
func (c *eslConn) enqueue(ev *eslEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.killed || !c.passesLocked(ev) {
		return
	}
	if len(c.queue) >= c.lim.queueLen {
		c.lost++
		if c.lost > c.lim.maxLost {
			c.killed = true
			c.queue = nil
			close(c.kill)
			// The writer may be stuck on a peer that does not read.
			_ = c.conn.SetWriteDeadline(time.Now().Add(c.lim.killGrace))
		}
		return
	}
	c.lost = 0
	c.queue = append(c.queue, ev)
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// passesLocked applies the `filter` headers: with any set, an event passes
// when one of them matches (header present, value equal ignoring case).
func (c *eslConn) passesLocked(ev *eslEvent) bool {
	if len(c.filters) == 0 {
		return true
	}
	for _, f := range c.filters {
		if v, ok := ev.header(f.name); ok && strings.EqualFold(v, f.value) {
			return true
		}
	}
	return false
}

// writeEvents writes the events queued so far in the connection's
// current format. Events queued meanwhile have signalled wake again, so a
// steady stream of events cannot starve the commands.
func (c *eslConn) writeEvents() {
	c.mu.Lock()
	q := c.queue
	c.queue = nil
	killed := c.killed
	c.mu.Unlock()
	if killed {
		return
	}
	for _, ev := range q {
		if _, err := c.bw.Write(ev.wire(c.format)); err != nil {
			return
		}
	}
}

// hasPrefixFold is strncasecmp(s, prefix, len(prefix)) == 0, the way
// mod_event_socket matches commands.
func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// handle executes one command (parse_command in mod_event_socket.c) and
// reports whether the connection must end; it has then said goodbye.
func (c *eslConn) handle(cmd *eslCommand) (end bool) {
	line := cmd.line
	if hasPrefixFold(line, "exit") || strings.HasPrefix(line, "...") {
		c.reply("+OK bye")
		c.notice(noticeGoodbye)
		return true
	}
	if !c.authed {
		switch {
		case hasPrefixFold(line, "auth "):
			if line[5:] != c.s.password {
				c.reply("-ERR invalid")
				c.notice(noticeGoodbye)
				return true
			}
			c.authed = true
			c.reply("+OK accepted")
		case hasPrefixFold(line, "userauth "):
			// No user directory here: every userauth fails.
			c.reply("-ERR invalid")
			c.notice(noticeGoodbye)
			return true
		default:
			c.reply("-ERR command not found")
		}
		return false
	}
	switch {
	case hasPrefixFold(line, "event"):
		c.reply(c.subscribe(line[5:]))
	case hasPrefixFold(line, "nixevent"):
		c.reply(c.unsubscribe(line[8:]))
	case hasPrefixFold(line, "noevents"):
		c.mu.Lock()
		c.all = false
		clear(c.subs)
		c.queue = nil
		c.mu.Unlock()
		c.reply("+OK no longer listening for events")
	case hasPrefixFold(line, "filter "):
		c.reply(c.filter(line[7:]))
	case hasPrefixFold(line, "api "):
		out, after := c.s.api(line[4:])
		c.apiResponse(out)
		if after != nil {
			after()
		}
	case hasPrefixFold(line, "bgapi "):
		c.bgapi(line[6:], cmd.header("Job-UUID"))
	case hasPrefixFold(line, "log"):
		c.reply(logReply(line[3:]))
	case hasPrefixFold(line, "nolog"):
		c.reply("+OK no longer logging")
	default:
		c.reply("-ERR command not found")
	}
	return false
}

// subscribe handles `event [plain|json|xml] NAMES...`. The format word
// switches the whole connection; unknown names are ignored; names after
// CUSTOM are subclasses (accepted, never fired here).
func (c *eslConn) subscribe(rest string) string {
	keys := 0
	if _, list, ok := strings.Cut(rest, " "); ok {
		custom := false
		c.mu.Lock()
		for i, tok := range strings.Split(list, " ") {
			if i == 0 {
				if f, ok := parseFormat(tok); ok {
					c.format = f
					continue
				}
			}
			if custom {
				continue
			}
			name, ok := eventType(tok)
			if !ok {
				continue
			}
			keys++
			switch name {
			case "ALL":
				c.all = true
			case "CUSTOM":
				custom = true
			default:
				c.subs[name] = true
			}
		}
		c.mu.Unlock()
	}
	if keys == 0 {
		return "-ERR no keywords supplied"
	}
	return "+OK event listener enabled " + c.format.String()
}

// unsubscribe handles `nixevent NAMES...`.
func (c *eslConn) unsubscribe(rest string) string {
	keys := 0
	if _, list, ok := strings.Cut(rest, " "); ok {
		custom := false
		c.mu.Lock()
		for _, tok := range strings.Split(list, " ") {
			if custom {
				continue
			}
			name, ok := eventType(tok)
			if !ok {
				continue
			}
			keys++
			switch name {
			case "CUSTOM":
				custom = true
			case "ALL":
				c.all = false
				clear(c.subs)
			default:
				if c.all {
					// ALL minus one: every other event stays.
					c.all = false
					for n := range eventNames {
						c.subs[n] = true
					}
				}
				delete(c.subs, name)
			}
		}
		c.mu.Unlock()
	}
	if keys == 0 {
		return "-ERR no keywords supplied"
	}
	return "+OK events nixed"
}

func parseFormat(s string) (eventFormat, bool) {
	switch strings.ToLower(s) {
	case "plain":
		return formatPlain, true
	case "json":
		return formatJSON, true
	case "xml":
		return formatXML, true
	}
	return 0, false
}

// filter handles `filter [add] Header value` and `filter delete Header
// [value]` / `filter delete all`.
func (c *eslConn) filter(rest string) string {
	name, value, hasValue := strings.Cut(rest, " ")
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case strings.EqualFold(name, "delete") && hasValue:
		name, value, hasValue = strings.Cut(value, " ")
		if strings.EqualFold(name, "all") {
			c.filters = nil
		} else {
			kept := c.filters[:0]
			for _, f := range c.filters {
				if !strings.EqualFold(f.name, name) || (hasValue && f.value != value) {
					kept = append(kept, f)
				}
			}
			c.filters = kept
		}
		return "+OK filter deleted. [" + name + "]=[" + value + "]"
	case hasValue:
		if strings.EqualFold(name, "add") {
			if name, value, hasValue = strings.Cut(value, " "); !hasValue {
				return "-ERR invalid syntax"
			}
		}
		c.filters = append(c.filters, eslHeader{name, value})
		return "+OK filter added. [" + name + "]=[" + value + "]"
	default:
		return "-ERR invalid syntax"
	}
}

// logReply answers `log [level]`. No log lines are ever sent.
func logReply(rest string) string {
	levels := []string{"console", "alert", "crit", "err", "warning", "notice", "info", "debug"}
	level := strings.TrimSpace(rest)
	if level == "" {
		return "+OK log level  [7]"
	}
	for i, l := range levels {
		if strings.EqualFold(level, l) || level == strconv.Itoa(i) {
			return "+OK log level " + level + " [" + strconv.Itoa(i) + "]"
		}
	}
	return "-ERR invalid log level"
}

// bgapi answers at once with a Job-UUID and runs the command in the
// background; its output comes as a BACKGROUND_JOB event.
func (c *eslConn) bgapi(rest, jobUUID string) {
	if jobUUID == "" {
		jobUUID = newUUID()
	}
	c.bw.WriteString("Content-Type: command/reply\nReply-Text: +OK Job-UUID: ")
	c.bw.WriteString(jobUUID)
	c.bw.WriteString("\nJob-UUID: ")
	c.bw.WriteString(jobUUID)
	c.bw.WriteString("\n\n")
	s := c.s
	s.wg.Add(1) // serve is running, so the count is not zero
	go func() {
		defer s.wg.Done()
		out, after := s.api(rest)
		name, arg, hasArg := strings.Cut(rest, " ")
		s.fire("BACKGROUND_JOB", func(seq uint64, now time.Time) *eslEvent {
			e := s.newEvent("BACKGROUND_JOB", siteBackgroundJob, seq, now)
			e.add("Job-UUID", jobUUID)
			e.add("Job-Command", name)
			if hasArg {
				e.add("Job-Command-Arg", arg)
			}
			e.body = out
			return e
		})
		if after != nil {
			after()
		}
	}()
}
