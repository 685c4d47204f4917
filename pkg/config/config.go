package config

import "time"

// Config is the whole sipbalancer configuration. Its YAML shape is a public
// interface (see DESIGN.md): keys may be added, never renamed. Every field's
// comment states its default; defaults are applied in one place
// (applyDefaults) and checked in one place (Validate).
type Config struct {
	SIP        SIP        `mapstructure:"sip"`
	Nodes      []Node     `mapstructure:"nodes"`
	Dispatcher Dispatcher `mapstructure:"dispatcher"`
	Health     Health     `mapstructure:"health"`
	Failover   Failover   `mapstructure:"failover"`
	Session    Session    `mapstructure:"session"`
	Admin      Admin      `mapstructure:"admin"`
	Log        Log        `mapstructure:"log"`
	// Trunks are the carriers allowed to send; none: every source
	// (guard.go).
	Trunks   []Trunk  `mapstructure:"trunks"`
	Security Security `mapstructure:"security"`
	Limits   Limits   `mapstructure:"limits"`
}

// SIP configures the listeners facing carriers and nodes.
type SIP struct {
	// Listen lists the sockets to serve, as scheme://host:port with scheme
	// udp, tcp or tls (default ["udp://0.0.0.0:5060", "tcp://0.0.0.0:5060"]).
	Listen []string `mapstructure:"listen"`
	// Advertise is the host[:port] written into Record-Route (default: the
	// listen address; for a wildcard listen address, the host's first
	// non-loopback IPv4 address). Instances behind one VIP advertise the
	// VIP. Via always carries the instance's own address.
	Advertise string `mapstructure:"advertise"`
	// TLS holds the certificate and key for tls:// listeners.
	TLS TLS `mapstructure:"tls"`
	// ShutdownTimeout bounds the drain after SIGTERM: new INVITEs get 503
	// while in-flight transactions and dialogs' requests finish (default 30s).
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
	// UserAgent is the Server/User-Agent value on responses the balancer
	// itself generates (default "sipbalancer").
	UserAgent string `mapstructure:"user_agent"`
}

// TLS names the certificate and key files for tls:// listeners.
type TLS struct {
	Cert string `mapstructure:"cert"`
	Key  string `mapstructure:"key"`
	// ReloadCheck is how often the certificate and key files are checked
	// for a change (modification time); a changed pair is loaded for new
	// connections. 0: never (default 10s).
	ReloadCheck time.Duration `mapstructure:"reload_check"`
}

// Node is one FreeSWITCH node of the pool.
type Node struct {
	// ID names the node in logs, metrics, tokens and the admin API:
	// 1-64 characters of [A-Za-z0-9_-]. Required, unique.
	ID string `mapstructure:"id"`
	// SIP is where calls are sent: host:port, or a SIP URI such as
	// sip:10.0.0.11:5060;transport=tcp (default transport udp). Required.
	SIP string `mapstructure:"sip"`
	// ESL is the node's Event Socket host:port (optional).
	ESL string `mapstructure:"esl"`
	// ESLPassword authenticates to the Event Socket (default "ClueCon").
	ESLPassword string `mapstructure:"esl_password"`
	// Weight is the node's share of new calls relative to others (default 1).
	Weight int `mapstructure:"weight"`
	// MaxCalls caps the calls this instance keeps on the node; 0 means no
	// local cap (Max-Sessions from ESL when available) (default 0).
	MaxCalls int `mapstructure:"max_calls"`
	// Priority groups nodes for the priority policy: lower is preferred
	// (default 0).
	Priority int `mapstructure:"priority"`
	// Drain takes the node out of rotation for new calls while its calls
	// go on (default false).
	Drain bool `mapstructure:"drain"`
	// MediaTarget is this node's media probe target, instead of
	// health.media.target: a sip: URI, {node} standing for the node's
	// host:port (default "": health.media.target).
	MediaTarget string `mapstructure:"media_target"`
}

// Dispatcher chooses the selection policy.
type Dispatcher struct {
	// Policy is one of least_load, weighted_round_robin, hash, priority
	// (default least_load).
	Policy string `mapstructure:"policy"`
	// HashKey is what the hash policy hashes: "call-id" or "header:<Name>"
	// (default "call-id").
	HashKey string `mapstructure:"hash_key"`
}

// Health configures how node health is judged.
type Health struct {
	Options OptionsProbe `mapstructure:"options"`
	Passive Passive      `mapstructure:"passive"`
	ESL     ESLHealth    `mapstructure:"esl"`
	CPU     CPUHealth    `mapstructure:"cpu"`
	Media   MediaProbe   `mapstructure:"media"`
	// SourceAddr is the local IP that OPTIONS probes, Event Socket
	// connections and media probe calls (SIP and RTP) leave from, to keep
	// health traffic on a monitoring network (default "": the system's
	// choice).
	SourceAddr string `mapstructure:"source_addr"`
}

// MediaProbe configures the media probe: now and then a short call to each
// node's echo extension with RTP, which must come back. A node whose SIP
// answers while its media is dead (RTP ports exhausted, a firewall change,
// a stuck media thread) is taken out like a dead one. Probe calls go
// straight to the node, not through the proxy, so they never count as
// customer calls in the balancer's metrics, and carry the header
// X-Sipbalancer-Probe: media for the node's dialplan and CDRs.
type MediaProbe struct {
	// Enabled turns the media probe on (default false).
	Enabled bool `mapstructure:"enabled"`
	// Interval between the starts of two probe calls to one node
	// (default 10s).
	Interval time.Duration `mapstructure:"interval"`
	// Target is the probe call's Request-URI, a sip: URI where {node}
	// stands for the node's host:port from nodes[].sip; it must reach an
	// extension that echoes media, such as FreeSWITCH's echo application
	// (default "sip:echo@{node}"). nodes[].media_target overrides it.
	Target string `mapstructure:"target"`
	// Duration is how long RTP is sent in each probe call, at 20 ms per
	// packet (default 1s).
	Duration time.Duration `mapstructure:"duration"`
	// Timeout bounds the wait for the final answer to the probe's INVITE,
	// and to its BYE (default 5s).
	Timeout time.Duration `mapstructure:"timeout"`
	// Codec is PCMU or PCMA (default PCMU).
	Codec string `mapstructure:"codec"`
	// MaxLoss is the packet loss, in percent, above which a probe is bad
	// (default 20).
	MaxLoss float64 `mapstructure:"max_loss"`
	// Threshold is how many consecutive bad probes (loss above max_loss,
	// or no RTP back at all) take a node down with reason media
	// (default 2).
	Threshold int `mapstructure:"threshold"`
	// Rise is how many consecutive good probes bring it back (default 2).
	Rise int `mapstructure:"rise"`
}

// ESLHealth configures the FreeSWITCH Event Socket clients (nodes with esl).
type ESLHealth struct {
	// PollInterval between `api status` / `fsctl pause_check` polls, which
	// keep load figures fresh between FreeSWITCH's 20 s HEARTBEATs
	// (default 1s).
	PollInterval time.Duration `mapstructure:"poll_interval"`
	// ReplyTimeout: a node whose Event Socket does not answer a poll within
	// it is hung; the connection is dropped (default 2s).
	ReplyTimeout time.Duration `mapstructure:"reply_timeout"`
	// MaxAge: load figures older than this are treated as unknown, never
	// trusted forever (default 3s).
	MaxAge time.Duration `mapstructure:"max_age"`
	// DownOnDisconnect marks a node down the moment its Event Socket
	// connection is refused or drops: the fastest sign of a crashed
	// FreeSWITCH (default true).
	DownOnDisconnect bool `mapstructure:"down_on_disconnect"`
	// ProfileCheck is how often `sofia status` is checked; a SIP profile not
	// RUNNING marks the node down. 0 disables (default 5s).
	ProfileCheck time.Duration `mapstructure:"profile_check"`
}

// CPUHealth makes a node whose CPU is saturated full (no new calls) until
// it recovers. It needs Event Socket load figures.
type CPUHealth struct {
	// IdleMin is the Idle-CPU percentage under which the node counts as
	// saturated; 0 disables (default 5).
	IdleMin float64 `mapstructure:"idle_min"`
	// For is how long Idle-CPU must stay under IdleMin (default 60s).
	For time.Duration `mapstructure:"for"`
}

// OptionsProbe configures the SIP OPTIONS prober.
type OptionsProbe struct {
	// Interval between probes of one node (default 1s).
	Interval time.Duration `mapstructure:"interval"`
	// Timeout for one probe's answer (default 500ms).
	Timeout time.Duration `mapstructure:"timeout"`
	// Fall is how many consecutive failed probes mark a node down (default 2).
	Fall int `mapstructure:"fall"`
	// Rise is how many consecutive good probes bring it back (default 2).
	Rise int `mapstructure:"rise"`
	// AliveCodes are the answers that count as alive: classes such as
	// "2xx" or codes such as "404" (default ["2xx", "404", "405", "481"]).
	// 503 always means full (alive, no new calls), whatever this says.
	AliveCodes []string `mapstructure:"alive_codes"`
	// DownOnRefused marks a node down at the first probe refused by the
	// node's host (ICMP port unreachable, TCP RST): nothing listens there
	// any more (default true).
	DownOnRefused bool `mapstructure:"down_on_refused"`
}

// Passive configures failure counting from live traffic.
type Passive struct {
	// Failures is how many consecutive INVITE failures the node caused
	// (no answer in time, a failover code other than 503) before it is
	// taken down (default 3).
	Failures int `mapstructure:"failures"`
	// Cooldown is the least time a node taken down by passive failures
	// stays down; after it, successful probes (rise) bring it back
	// (default 10s).
	Cooldown time.Duration `mapstructure:"cooldown"`
	// FullHold: an INVITE answered 503 marks the node full (not down) for
	// this long, unless its Event Socket figures show room sooner
	// (default 5s).
	FullHold time.Duration `mapstructure:"full_hold"`
}

// Failover configures serial failover of new calls.
type Failover struct {
	// InviteTimeout is how long a node has to send a first 18x or final
	// response before the branch is abandoned (CANCELled if it sent 100) and
	// the next candidate is tried (default 1s).
	InviteTimeout time.Duration `mapstructure:"invite_timeout"`
	// MaxAttempts caps the nodes tried for one call (default 3).
	MaxAttempts int `mapstructure:"max_attempts"`
	// Codes are the final responses, received before any 18x, that move the
	// call to the next candidate (default [408, 480, 500, 502, 503, 504]).
	Codes []int `mapstructure:"codes"`
	// RingTimeout (RFC 3261 Timer C) ends a call that got an 18x but no final
	// response: the node is CANCELled and the caller gets 408 (default 3m).
	RingTimeout time.Duration `mapstructure:"ring_timeout"`
	// RetryAfter is the Retry-After sent with 503 when no node can take a
	// call (default 1s; whole seconds).
	RetryAfter time.Duration `mapstructure:"retry_after"`
}

// Session configures dialog affinity.
type Session struct {
	// Store is memory or redis (default memory).
	Store string `mapstructure:"store"`
	// Redis configures the redis store.
	Redis Redis `mapstructure:"redis"`
	// TokenSecret is the HMAC key for Record-Route tokens; instances that
	// share calls must share it. Empty: a random key per process (a warning
	// is logged). Prefer SIPBALANCER_SESSION_TOKEN_SECRET to a file.
	TokenSecret string `mapstructure:"token_secret"`
	// EarlyTTL is how long an unanswered call's binding lives (default 5m).
	EarlyTTL time.Duration `mapstructure:"early_ttl"`
	// DialogTTL is how long a confirmed dialog's binding lives without
	// in-dialog traffic (default 12h).
	DialogTTL time.Duration `mapstructure:"dialog_ttl"`
	// ReleaseLinger keeps a binding after BYE so that retransmissions still
	// route (default 32s).
	ReleaseLinger time.Duration `mapstructure:"release_linger"`
	// MaxDialogs bounds the memory store (default 1000000).
	MaxDialogs int `mapstructure:"max_dialogs"`
	// Rehome moves the calls of a node that is down to another node, for
	// pools whose nodes share a database and recover each other's calls:
	// the first instance to decide writes the new owner atomically and every
	// instance follows it (default false).
	Rehome bool `mapstructure:"rehome"`
}

// Redis configures the shared affinity store.
type Redis struct {
	// Mode is standalone, sentinel or cluster; empty picks sentinel when
	// MasterName is set, cluster when Addrs has several addresses, else
	// standalone (default "").
	Mode string `mapstructure:"mode"`
	// Addrs lists host:port of Redis servers, Sentinels (with MasterName) or
	// Cluster nodes (default ["127.0.0.1:6379"]).
	Addrs []string `mapstructure:"addrs"`
	// MasterName selects Sentinel mode when set.
	MasterName string `mapstructure:"master_name"`
	Username   string `mapstructure:"username"`
	// Password; prefer SIPBALANCER_SESSION_REDIS_PASSWORD to a file.
	Password string `mapstructure:"password"`
	DB       int    `mapstructure:"db"`
	// KeyPrefix starts every key (default "sipb").
	KeyPrefix string `mapstructure:"key_prefix"`
	// TLS enables TLS to Redis.
	TLS bool `mapstructure:"tls"`
	// DialTimeout, ReadTimeout, WriteTimeout (defaults 1s, 200ms, 200ms).
	DialTimeout  time.Duration `mapstructure:"dial_timeout"`
	ReadTimeout  time.Duration `mapstructure:"read_timeout"`
	WriteTimeout time.Duration `mapstructure:"write_timeout"`
	// PoolSize per Redis node (default 20).
	PoolSize int `mapstructure:"pool_size"`
	// SentinelPassword authenticates to the Sentinels when they require it;
	// prefer SIPBALANCER_SESSION_REDIS_SENTINEL_PASSWORD (default "").
	SentinelPassword string `mapstructure:"sentinel_password"`
	// QueueSize bounds the writes waiting for Redis; beyond it a write is
	// dropped (counted) and the call goes on (default 65536).
	QueueSize int `mapstructure:"queue_size"`
	// LookupTimeout bounds a read, made only for requests without a usable
	// Record-Route token (default 200ms).
	LookupTimeout time.Duration `mapstructure:"lookup_timeout"`
}

// Admin configures the admin HTTP server.
type Admin struct {
	// Listen is host:port; empty disables it (default "127.0.0.1:9090").
	Listen string `mapstructure:"listen"`
	// Token is the bearer token for mutating endpoints; prefer
	// SIPBALANCER_ADMIN_TOKEN to a file.
	Token string `mapstructure:"token"`
}

// Log configures zap.
type Log struct {
	// Level is debug, info, warn or error (default info).
	Level string `mapstructure:"level"`
	// Format is json or console (default json).
	Format string `mapstructure:"format"`
	// Sampling keeps the first 100 lines of each message text per second,
	// then 1 in 100, so that a flood cannot flood the log (default true).
	Sampling bool `mapstructure:"sampling"`
}
