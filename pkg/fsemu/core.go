package fsemu

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// defaultMaxSessionsShown is what FreeSWITCH reports as Max-Sessions with
// its stock max-sessions, and what a node without a session cap reports.
const defaultMaxSessionsShown = 1000

// core holds the figures a FreeSWITCH core reports about itself over the
// Event Socket (HEARTBEAT, `status`): start time and identity, the session
// rates and peaks, the sessions-per-second budget and the idle CPU. Session
// creations are counted by the SIP side (sessionCreated); everything else
// reads a snapshot. All methods are safe for concurrent use.
type core struct {
	started  time.Time
	uuid     string // Core-UUID, new on every Start
	hostname string
	version  string

	sps     atomic.Int64  // configured sessions-per-second
	idleCPU atomic.Uint64 // math.Float64bits, percent

	mu        sync.Mutex
	total     int64 // sessions since startup
	sec       int64 // the second (since start) inSec counts
	inSec     int64 // sessions created during sec
	last      int64 // sessions created in the last full second
	spsPeak   int64 // peak per second since start
	spsPeak5  int64 // peak per second in the current 5-minute window
	peak      int64 // peak concurrent sessions since start
	peak5     int64 // peak concurrent sessions in the current 5-minute window
	window    int64 // current 5-minute window (since start)
	activeNow func() int64
}

func newCore(cfg Config, active func() int64) *core {
	c := &core{
		started:   time.Now(),
		uuid:      newUUID(),
		hostname:  cfg.Hostname,
		version:   cfg.Version,
		activeNow: active,
	}
	c.sps.Store(int64(cfg.SessionsPerSecond))
	c.setIdleCPU(cfg.IdleCPU)
	return c
}

func (c *core) setIdleCPU(v float64) {
	if math.IsNaN(v) {
		v = 0
	}
	c.idleCPU.Store(math.Float64bits(min(max(v, 0), 100)))
}

func (c *core) idle() float64 { return math.Float64frombits(c.idleCPU.Load()) }

// rollLocked brings the per-second and 5-minute figures up to now, as
// FreeSWITCH's once-a-second timer does (src/switch_time.c).
func (c *core) rollLocked(now time.Time) {
	s := int64(now.Sub(c.started) / time.Second)
	if s <= c.sec {
		return
	}
	c.spsPeak = max(c.spsPeak, c.inSec)
	c.spsPeak5 = max(c.spsPeak5, c.inSec)
	if s == c.sec+1 {
		c.last = c.inSec
	} else {
		c.last = 0
	}
	c.sec, c.inSec = s, 0
	if w := s / 300; w != c.window {
		c.window = w
		c.spsPeak5 = 0
		c.peak5 = c.activeNow()
	}
}

// sessionCreated counts a new session (an admitted call); active is the
// session count including it.
func (c *core) sessionCreated(active int64) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rollLocked(time.Now())
	c.total++
	c.inSec++
	c.peak = max(c.peak, active)
	c.peak5 = max(c.peak5, active)
	return c.total
}

// coreFigures is a snapshot of what HEARTBEAT and `status` report.
type coreFigures struct {
	uptime        time.Duration
	sessions      int64 // Session-Count
	maxSessions   int64 // Max-Sessions
	spsRemaining  int64 // Session-Per-Sec: the budget left this second
	spsConfigured int64
	spsLast       int64
	spsPeak       int64
	spsPeak5      int64
	total         int64
	peak          int64
	peak5         int64
	idleCPU       float64
}

func (c *core) figures(maxSessions int64) coreFigures {
	now := time.Now()
	c.mu.Lock()
	c.rollLocked(now)
	sps := c.sps.Load()
	f := coreFigures{
		uptime:        now.Sub(c.started),
		sessions:      c.activeNow(),
		maxSessions:   maxSessions,
		spsRemaining:  max(sps-c.inSec, 0),
		spsConfigured: sps,
		spsLast:       c.last,
		spsPeak:       c.spsPeak,
		spsPeak5:      c.spsPeak5,
		total:         c.total,
		peak:          c.peak,
		peak5:         c.peak5,
		idleCPU:       c.idle(),
	}
	c.mu.Unlock()
	if f.maxSessions <= 0 {
		f.maxSessions = defaultMaxSessionsShown
	}
	return f
}

// humanVersion is the version as `status` prints it: FreeSWITCH's
// switch_version_full_human of a release build, e.g. "1.11.0-release  64bit"
// for "1.11.0-release~64bit".
func humanVersion(v string) string { return strings.Replace(v, "~", "  ", 1) }

// versionBits is the word size part of a version ("64bit").
func versionBits(v string) string {
	if i := strings.LastIndexByte(v, '~'); i >= 0 {
		return v[i+1:]
	}
	return "64bit"
}

// formatUptime spells d out like switch_core_measure_time and the Up-Time
// header: "0 years, 0 days, 0 hours, 1 minute, 59 seconds, 526
// milliseconds, 247 microseconds" (singular when the value is 1).
func formatUptime(d time.Duration) string {
	us := int64(d / time.Microsecond)
	mms := us % 1000
	t := us / 1000
	ms := t % 1000
	t /= 1000
	sec := t % 60
	t /= 60
	mins := t % 60
	t /= 60
	hr := t % 24
	t /= 24
	day := t % 365
	yr := t / 365
	var b strings.Builder
	for i, p := range []struct {
		v    int64
		unit string
	}{{yr, "year"}, {day, "day"}, {hr, "hour"}, {mins, "minute"}, {sec, "second"}, {ms, "millisecond"}, {mms, "microsecond"}} {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d %s", p.v, p.unit)
		if p.v != 1 {
			b.WriteByte('s')
		}
	}
	return b.String()
}

// newUUID returns a random (version 4) UUID in the usual text form.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:], b[10:])
	return string(out[:])
}
