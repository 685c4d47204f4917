package config

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Names accepted by dispatcher.policy.
const (
	PolicyLeastLoad          = "least_load"
	PolicyWeightedRoundRobin = "weighted_round_robin"
	PolicyHash               = "hash"
	PolicyPriority           = "priority"
)

// Names accepted by session.store.
const (
	StoreMemory = "memory"
	StoreRedis  = "redis"
)

// Validate checks every rule and returns all problems joined (errors.Join),
// each naming its key, or nil. It does no I/O: files named by the config are
// opened, and host names resolved, by the packages that use them.
func (c *Config) Validate() error {
	var p problems
	c.validateSIP(&p)
	c.validateNodes(&p)
	c.validateDispatcher(&p)
	c.validateHealth(&p)
	c.validateFailover(&p)
	c.validateSession(&p)
	c.validateAdmin(&p)
	c.validateLog(&p)
	c.validateTrunks(&p)
	c.validateSecurity(&p)
	c.validateLimits(&p)
	c.validateTLSReload(&p)
	return errors.Join(p...)
}

// problems collects "key: problem" errors.
type problems []error

func (p *problems) add(key, format string, args ...any) {
	*p = append(*p, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
}

// uniqueName checks the identifier value of entry i of list (its key
// field, e.g. nodes[i].id): present, 1-64 characters of the node ID
// alphabet, and not used by an earlier entry (seen maps names to indexes).
func (p *problems) uniqueName(list string, i int, field, value string, seen map[string]int) {
	key := fmt.Sprintf("%s[%d].%s", list, i, field)
	switch {
	case value == "":
		p.add(key, "required")
	case !validNodeID(value):
		p.add(key, "%q must be 1-64 characters of A-Z, a-z, 0-9, _ and -", value)
	default:
		if j, dup := seen[value]; dup {
			p.add(key, "duplicate %s %q (also %s[%d])", field, value, list, j)
		} else {
			seen[value] = i
		}
	}
}

func (p *problems) atLeast(key string, v, least int) {
	if v < least {
		p.add(key, "must be >= %d, got %d", least, v)
	}
}

func (p *problems) positive(key string, d time.Duration) {
	if d <= 0 {
		p.add(key, "must be > 0, got %s", d)
	}
}

func (c *Config) validateSIP(p *problems) {
	if len(c.SIP.Listen) == 0 {
		p.add("sip.listen", "at least one listener is required")
	}
	seen := make(map[Listener]int)
	tlsAt := -1
	for i, s := range c.SIP.Listen {
		key := fmt.Sprintf("sip.listen[%d]", i)
		l, err := ParseListen(s)
		if err != nil {
			p.add(key, "%v", err)
			continue
		}
		if j, dup := seen[l]; dup {
			p.add(key, "duplicate of sip.listen[%d]", j)
			continue
		}
		seen[l] = i
		if l.Network == "tls" && tlsAt < 0 {
			tlsAt = i
		}
	}
	if tlsAt >= 0 {
		if c.SIP.TLS.Cert == "" {
			p.add("sip.tls.cert", "required by tls:// listener sip.listen[%d]", tlsAt)
		}
		if c.SIP.TLS.Key == "" {
			p.add("sip.tls.key", "required by tls:// listener sip.listen[%d]", tlsAt)
		}
	}
	if a := c.SIP.Advertise; a != "" {
		if err := checkHostOrHostPort(a); err != nil {
			p.add("sip.advertise", "%q is not host or host:port (%v)", a, err)
		}
	}
	p.positive("sip.shutdown_timeout", c.SIP.ShutdownTimeout)
}

func (c *Config) validateNodes(p *problems) {
	if len(c.Nodes) == 0 {
		p.add("nodes", "at least one node is required")
		return
	}
	ids := make(map[string]int)
	addrs := make(map[NodeAddr]int)
	for i, n := range c.Nodes {
		key := fmt.Sprintf("nodes[%d]", i)
		p.uniqueName("nodes", i, "id", n.ID, ids)

		if n.SIP == "" {
			p.add(key+".sip", "required")
		} else if a, err := ParseNodeSIP(n.SIP); err != nil {
			p.add(key+".sip", "%v", err)
		} else {
			// Compared as written: two names for one host are not
			// caught, a copied line is.
			a.Host = strings.ToLower(a.Host)
			if j, dup := addrs[a]; dup {
				p.add(key+".sip", "same address as nodes[%d] (%s %s)", j, a.Transport, a.HostPort())
			} else {
				addrs[a] = i
			}
		}

		if n.ESL != "" {
			if _, _, err := splitHostPort(n.ESL, remoteAddr); err != nil {
				p.add(key+".esl", "%q is not host:port (%v)", n.ESL, err)
			}
			if n.ESLPassword == "" {
				p.add(key+".esl_password", "required when esl is set")
			}
		}
		p.atLeast(key+".weight", n.Weight, 1)
		p.atLeast(key+".max_calls", n.MaxCalls, 0)
		if n.MediaTarget != "" {
			if err := checkMediaTarget(n.MediaTarget); err != nil {
				p.add(key+".media_target", "%v", err)
			}
		}
	}
}

// validNodeID reports whether id is 1-64 characters of [A-Za-z0-9_-]. IDs
// go into metric labels, log fields and Record-Route tokens, so they stay
// plain.
func validNodeID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if ch := id[i]; !isAlnum(ch) && ch != '_' && ch != '-' {
			return false
		}
	}
	return true
}

func (c *Config) validateDispatcher(p *problems) {
	switch c.Dispatcher.Policy {
	case PolicyLeastLoad, PolicyWeightedRoundRobin, PolicyHash, PolicyPriority:
	default:
		p.add("dispatcher.policy", "unknown policy %q (want %s, %s, %s, %s)", c.Dispatcher.Policy,
			PolicyLeastLoad, PolicyWeightedRoundRobin, PolicyHash, PolicyPriority)
	}
	k := c.Dispatcher.HashKey
	if name, ok := strings.CutPrefix(k, "header:"); ok {
		if !isToken(name) {
			p.add("dispatcher.hash_key", "%q: header name %q is not a SIP token", k, name)
		}
	} else if k != "call-id" {
		p.add("dispatcher.hash_key", "%q is not call-id or header:<Name>", k)
	}
}

// isToken reports whether s is a non-empty RFC 3261 token, the syntax of a
// header name.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if ch := s[i]; !isAlnum(ch) && !strings.ContainsRune("-.!%*_+`'~", rune(ch)) {
			return false
		}
	}
	return true
}

func (c *Config) validateHealth(p *problems) {
	o := c.Health.Options
	p.positive("health.options.interval", o.Interval)
	p.positive("health.options.timeout", o.Timeout)
	if o.Interval > 0 && o.Timeout > 0 && o.Timeout >= o.Interval {
		p.add("health.options.timeout", "must be less than health.options.interval (%s), got %s", o.Interval, o.Timeout)
	}
	p.atLeast("health.options.fall", o.Fall, 1)
	p.atLeast("health.options.rise", o.Rise, 1)

	for i, ac := range o.AliveCodes {
		if !validAliveCode(ac) {
			p.add(fmt.Sprintf("health.options.alive_codes[%d]", i), "%q is not a status code (200-699) or class (2xx-6xx)", ac)
		}
	}

	p.atLeast("health.passive.failures", c.Health.Passive.Failures, 1)
	p.positive("health.passive.cooldown", c.Health.Passive.Cooldown)
	p.positive("health.passive.full_hold", c.Health.Passive.FullHold)

	e := c.Health.ESL
	p.positive("health.esl.poll_interval", e.PollInterval)
	p.positive("health.esl.reply_timeout", e.ReplyTimeout)
	p.positive("health.esl.max_age", e.MaxAge)
	if e.ProfileCheck < 0 {
		p.add("health.esl.profile_check", "must be >= 0, got %s", e.ProfileCheck)
	}
	if e.PollInterval > 0 && e.MaxAge > 0 && e.MaxAge < e.PollInterval {
		p.add("health.esl.max_age", "must be at least health.esl.poll_interval (%s), got %s", e.PollInterval, e.MaxAge)
	}
	if c.Health.CPU.IdleMin < 0 || c.Health.CPU.IdleMin > 100 {
		p.add("health.cpu.idle_min", "must be a percentage 0-100, got %v", c.Health.CPU.IdleMin)
	}
	if c.Health.CPU.IdleMin > 0 {
		p.positive("health.cpu.for", c.Health.CPU.For)
	}
	m := c.Health.Media
	p.positive("health.media.interval", m.Interval)
	p.positive("health.media.duration", m.Duration)
	p.positive("health.media.timeout", m.Timeout)
	if m.Interval > 0 && m.Duration >= m.Interval {
		p.add("health.media.duration", "must be less than health.media.interval (%s), got %s", m.Interval, m.Duration)
	}
	if err := checkMediaTarget(m.Target); err != nil {
		p.add("health.media.target", "%v", err)
	}
	switch m.Codec {
	case "PCMU", "PCMA":
	default:
		p.add("health.media.codec", "unknown codec %q (want PCMU or PCMA)", m.Codec)
	}
	if m.MaxLoss < 0 || m.MaxLoss >= 100 {
		p.add("health.media.max_loss", "must be a percentage in [0, 100), got %v", m.MaxLoss)
	}
	p.atLeast("health.media.threshold", m.Threshold, 1)
	p.atLeast("health.media.rise", m.Rise, 1)
	if a := c.Health.SourceAddr; a != "" {
		if ip := net.ParseIP(a); ip == nil || ip.IsUnspecified() {
			p.add("health.source_addr", "%q is not a local IP address", a)
		}
	}
}

// checkMediaTarget accepts a sip: URI with a user part and a host, where
// {node} may stand for the host:port: sip:echo@{node}, sip:9196@10.0.0.11.
func checkMediaTarget(t string) error {
	bad := fmt.Errorf("%q is not a sip: URI with a user part, such as sip:echo@{node}", t)
	rest, ok := cutPrefixFold(t, "sip:")
	if !ok || strings.ContainsAny(t, " \t\r\n<>\"") {
		return bad
	}
	user, host, ok := strings.Cut(strings.ReplaceAll(rest, "{node}", "192.0.2.1:5060"), "@")
	if !ok || user == "" || host == "" || strings.ContainsAny(host, "@{}") {
		return bad
	}
	return nil
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

// validAliveCode accepts "200".."699" and "2xx".."6xx".
func validAliveCode(s string) bool {
	if len(s) != 3 || s[0] < '2' || s[0] > '6' {
		return false
	}
	if s[1:] == "xx" {
		return true
	}
	return s[1] >= '0' && s[1] <= '9' && s[2] >= '0' && s[2] <= '9'
}

func (c *Config) validateFailover(p *problems) {
	f := c.Failover
	p.positive("failover.invite_timeout", f.InviteTimeout)
	p.atLeast("failover.max_attempts", f.MaxAttempts, 1)
	for i, code := range f.Codes {
		if code < 300 || code > 699 {
			p.add(fmt.Sprintf("failover.codes[%d]", i), "%d is not a failure code (want 300-699)", code)
		}
	}
	p.positive("failover.ring_timeout", f.RingTimeout)
	switch {
	case f.RetryAfter < time.Second:
		p.add("failover.retry_after", "must be at least 1s, got %s", f.RetryAfter)
	case f.RetryAfter%time.Second != 0:
		p.add("failover.retry_after", "must be whole seconds (Retry-After has no fractions), got %s", f.RetryAfter)
	}
}

func (c *Config) validateSession(p *problems) {
	s := c.Session
	switch s.Store {
	case StoreMemory:
		p.atLeast("session.max_dialogs", s.MaxDialogs, 1)
	case StoreRedis:
		c.validateRedis(p)
	default:
		p.add("session.store", "unknown store %q (want %s or %s)", s.Store, StoreMemory, StoreRedis)
	}
	p.positive("session.early_ttl", s.EarlyTTL)
	p.positive("session.dialog_ttl", s.DialogTTL)
	p.positive("session.release_linger", s.ReleaseLinger)
}

// validateRedis checks session.redis, which matters only with store redis.
func (c *Config) validateRedis(p *problems) {
	r := c.Session.Redis
	if len(r.Addrs) == 0 {
		p.add("session.redis.addrs", "at least one address is required when session.store is redis")
	}
	for i, a := range r.Addrs {
		if _, _, err := splitHostPort(a, remoteAddr); err != nil {
			p.add(fmt.Sprintf("session.redis.addrs[%d]", i), "%q is not host:port (%v)", a, err)
		}
	}
	p.atLeast("session.redis.db", r.DB, 0)
	p.atLeast("session.redis.pool_size", r.PoolSize, 1)
	p.positive("session.redis.dial_timeout", r.DialTimeout)
	p.positive("session.redis.read_timeout", r.ReadTimeout)
	p.positive("session.redis.write_timeout", r.WriteTimeout)
	p.atLeast("session.redis.queue_size", r.QueueSize, 1)
	p.positive("session.redis.lookup_timeout", r.LookupTimeout)
	switch r.Mode {
	case "", "standalone", "sentinel", "cluster":
	default:
		p.add("session.redis.mode", "unknown mode %q (want standalone, sentinel or cluster)", r.Mode)
	}
	mode := r.Mode
	if mode == "" {
		switch {
		case r.MasterName != "":
			mode = "sentinel"
		case len(r.Addrs) > 1:
			mode = "cluster"
		default:
			mode = "standalone"
		}
	}
	if mode == "sentinel" && r.MasterName == "" {
		p.add("session.redis.master_name", "required in sentinel mode")
	}
	if mode != "sentinel" && r.MasterName != "" {
		p.add("session.redis.master_name", "only used in sentinel mode (mode is %s)", mode)
	}
	if mode == "standalone" && len(r.Addrs) > 1 {
		p.add("session.redis.addrs", "standalone mode takes one address, got %d", len(r.Addrs))
	}
	if mode == "cluster" && r.DB != 0 {
		p.add("session.redis.db", "Redis Cluster has only database 0, got %d", r.DB)
	}
	if strings.ContainsAny(r.KeyPrefix, "{}") {
		p.add("session.redis.key_prefix", "must not contain braces (they change Redis Cluster hash slots), got %q", r.KeyPrefix)
	}
}

func (c *Config) validateAdmin(p *problems) {
	if a := c.Admin.Listen; a != "" {
		if _, _, err := splitHostPort(a, listenAddr); err != nil {
			p.add("admin.listen", "%q is not host:port (%v); leave it empty to disable the admin server", a, err)
		}
	}
}

func (c *Config) validateLog(p *problems) {
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		p.add("log.level", "unknown level %q (want debug, info, warn or error)", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		p.add("log.format", "unknown format %q (want json or console)", c.Log.Format)
	}
}
