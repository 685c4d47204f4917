package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// node is the smallest valid node list, for snippets about other keys.
const node = "nodes: [{id: fs1, sip: \"10.0.0.11:5060\"}]\n"

const examplePath = "../../configs/sipbalancer.example.yaml"

// isolateEnv blanks every SIPBALANCER_* variable of the surrounding
// environment for the test (an empty variable counts as unset), so that a
// developer's shell cannot change the results.
func isolateEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, EnvPrefix+"_") {
			t.Setenv(name, "")
		}
	}
}

func TestLoadBytesErrors(t *testing.T) {
	isolateEnv(t)
	tests := []struct {
		name string
		yaml string
		want string
		// errs is the number of problems reported; 0 means 1.
		errs int
	}{
		// decode
		{"unknown top-level key", node + "bogus: 1", `unknown key "bogus"`, 0},
		{"unknown nested key", node + "failover: {invite_timout: 1s}", `unknown key "failover.invite_timout"`, 0},
		{"unknown deep key", node + "health: {options: {fails: 2}}", `unknown key "health.options.fails"`, 0},
		{"unknown node key", `nodes: [{id: fs1, sip: "10.0.0.11:5060"}, {id: fs2, sip: "10.0.0.12:5060", wieght: 2}]`, `unknown key "nodes[1].wieght"`, 0},
		{"bare number duration", node + "failover: {invite_timeout: 5}", "failover.invite_timeout: want a duration such as 1s, got 5", 0},
		{"bad duration string", node + "health: {options: {interval: 5x}}", `health.options.interval: want a duration such as 1s, got "5x"`, 0},
		{"bad integer", node + "failover: {max_attempts: three}", `failover.max_attempts: want an integer, got "three"`, 0},
		{"fractional integer", node + "health: {options: {fall: 1.5}}", "health.options.fall: want an integer, got 1.5", 0},
		{"bad bool", node + "session: {redis: {tls: maybe}}", `session.redis.tls: want true or false, got "maybe"`, 0},
		{"map for a list", node + "failover: {codes: {a: 1}}", "failover.codes: want a list, got a map", 0},
		{"list for a string", node + "log: {level: [info]}", "log.level: want a string, got a list", 0},
		{"scalar for a section", node + "health: 5", "health: want a map of keys, got 5", 0},
		{"map for nodes", "nodes: {id: fs1}", "nodes: want a list, got a map", 0},
		{"not yaml", "sip: [", "parse yaml", 0},

		// sip
		{"listen scheme", node + `sip: {listen: ["ws://0.0.0.0:5060"]}`, `sip.listen[0]: unsupported scheme "ws" (want udp, tcp or tls)`, 0},
		{"listen without scheme", node + `sip: {listen: ["0.0.0.0:5060"]}`, `sip.listen[0]: "0.0.0.0:5060" is not scheme://host:port`, 0},
		{"listen without port", node + `sip: {listen: ["udp://0.0.0.0"]}`, `sip.listen[0]: "udp://0.0.0.0": missing port`, 0},
		{"listen duplicate", node + `sip: {listen: ["udp://0.0.0.0:5060", "udp://0.0.0.0:5060"]}`, "sip.listen[1]: duplicate of sip.listen[0]", 0},
		{"tls without cert", node + `sip: {listen: ["udp://0.0.0.0:5060", "tcp://0.0.0.0:5060", "tls://0.0.0.0:5061"], tls: {key: k.pem}}`, "sip.tls.cert: required by tls:// listener sip.listen[2]", 0},
		{"tls without key", node + `sip: {listen: ["tls://0.0.0.0:5061"], tls: {cert: c.pem}}`, "sip.tls.key: required by tls:// listener sip.listen[0]", 0},
		{"advertise with scheme", node + `sip: {advertise: "udp://192.0.2.1:5060"}`, `sip.advertise: "udp://192.0.2.1:5060" is not host or host:port`, 0},
		{"advertise unspecified", node + `sip: {advertise: "0.0.0.0"}`, "sip.advertise: \"0.0.0.0\" is not host or host:port (0.0.0.0 is the unspecified address", 0},
		{"advertise bad port", node + `sip: {advertise: "sbc.example:99999"}`, "sip.advertise: \"sbc.example:99999\" is not host or host:port (port 99999 is out of range)", 0},
		{"shutdown timeout", node + "sip: {shutdown_timeout: 0s}", "sip.shutdown_timeout: must be > 0, got 0s", 0},

		// nodes
		{"no nodes", "log: {level: info}", "nodes: at least one node is required", 0},
		{"empty nodes", "nodes: []", "nodes: at least one node is required", 0},
		{"node id missing", `nodes: [{sip: "10.0.0.11:5060"}]`, "nodes[0].id: required", 0},
		{"node id chars", `nodes: [{id: "fs 1", sip: "10.0.0.11:5060"}]`, `nodes[0].id: "fs 1" must be 1-64 characters of A-Z, a-z, 0-9, _ and -`, 0},
		{"node id too long", `nodes: [{id: ` + strings.Repeat("a", 65) + `, sip: "10.0.0.11:5060"}]`, "nodes[0].id: \"" + strings.Repeat("a", 65) + "\" must be 1-64 characters", 0},
		{"node id duplicate", `nodes: [{id: fs1, sip: "10.0.0.11:5060"}, {id: fs2, sip: "10.0.0.12:5060"}, {id: fs1, sip: "10.0.0.13:5060"}]`, `nodes[2].id: duplicate id "fs1"`, 0},
		{"node sip missing", `nodes: [{id: fs1}]`, "nodes[0].sip: required", 0},
		{"node sip without port", `nodes: [{id: fs1, sip: "10.0.0.11:5060"}, {id: fs2, sip: "10.0.0.1"}]`, `nodes[1].sip: "10.0.0.1" is not host:port or a sip: URI`, 0},
		{"node sip transport", `nodes: [{id: fs1, sip: "sip:10.0.0.11;transport=ws"}]`, `nodes[0].sip: SIP URI "sip:10.0.0.11;transport=ws": unsupported transport "ws" (want udp, tcp or tls)`, 0},
		{"node sip duplicate", `nodes: [{id: fs1, sip: "10.0.0.11:5060"}, {id: fs2, sip: "sip:10.0.0.11"}]`, "nodes[1].sip: same address as nodes[0] (UDP 10.0.0.11:5060)", 0},
		{"node esl", `nodes: [{id: fs1, sip: "10.0.0.11:5060", esl: "10.0.0.11"}]`, `nodes[0].esl: "10.0.0.11" is not host:port (missing port)`, 0},
		{"node esl password", `nodes: [{id: fs1, sip: "10.0.0.11:5060", esl: "10.0.0.11:8021", esl_password: ""}]`, "nodes[0].esl_password: required when esl is set", 0},
		{"node weight zero", `nodes: [{id: fs1, sip: "10.0.0.11:5060", weight: 0}]`, "nodes[0].weight: must be >= 1, got 0", 0},
		{"node max_calls", `nodes: [{id: fs1, sip: "10.0.0.11:5060", max_calls: -1}]`, "nodes[0].max_calls: must be >= 0, got -1", 0},

		// dispatcher
		{"policy", node + "dispatcher: {policy: roundrobin}", `dispatcher.policy: unknown policy "roundrobin" (want least_load, weighted_round_robin, hash, priority)`, 0},
		{"hash key", node + "dispatcher: {hash_key: callid}", `dispatcher.hash_key: "callid" is not call-id or header:<Name>`, 0},
		{"hash key header name", node + `dispatcher: {hash_key: "header:"}`, `dispatcher.hash_key: "header:": header name "" is not a SIP token`, 0},

		// health
		{"interval", node + "health: {options: {interval: 0s}}", "health.options.interval: must be > 0, got 0s", 0},
		{"timeout", node + "health: {options: {timeout: -1s}}", "health.options.timeout: must be > 0, got -1s", 0},
		{"timeout not below interval", node + "health: {options: {interval: 1s, timeout: 1s}}", "health.options.timeout: must be less than health.options.interval (1s), got 1s", 0},
		{"fall", node + "health: {options: {fall: 0}}", "health.options.fall: must be >= 1, got 0", 0},
		{"rise", node + "health: {options: {rise: 0}}", "health.options.rise: must be >= 1, got 0", 0},
		{"passive failures", node + "health: {passive: {failures: 0}}", "health.passive.failures: must be >= 1, got 0", 0},
		{"passive cooldown", node + "health: {passive: {cooldown: 0s}}", "health.passive.cooldown: must be > 0, got 0s", 0},
		{"alive code", node + "health: {options: {alive_codes: [\"2xx\", \"99\"]}}", `health.options.alive_codes[1]: "99" is not a status code`, 0},
		{"alive class", node + "health: {options: {alive_codes: [\"7xx\"]}}", `health.options.alive_codes[0]`, 0},
		{"esl max age below poll", node + "health: {esl: {poll_interval: 2s, max_age: 1s}}", "health.esl.max_age: must be at least health.esl.poll_interval (2s), got 1s", 0},
		{"esl reply timeout", node + "health: {esl: {reply_timeout: 0s}}", "health.esl.reply_timeout: must be > 0", 0},
		{"cpu idle", node + "health: {cpu: {idle_min: 101}}", "health.cpu.idle_min: must be a percentage 0-100, got 101", 0},
		{"source addr", node + "health: {source_addr: \"nope\"}", `health.source_addr: "nope" is not a local IP address`, 0},
		{"media interval", node + "health: {media: {interval: 0s}}", "health.media.interval: must be > 0, got 0s", 0},
		{"media duration", node + "health: {media: {duration: 0s}}", "health.media.duration: must be > 0, got 0s", 0},
		{"media duration not below interval", node + "health: {media: {interval: 2s, duration: 2s}}", "health.media.duration: must be less than health.media.interval (2s), got 2s", 0},
		{"media timeout", node + "health: {media: {timeout: 0s}}", "health.media.timeout: must be > 0, got 0s", 0},
		{"media codec", node + "health: {media: {codec: G729}}", `health.media.codec: unknown codec "G729" (want PCMU or PCMA)`, 0},
		{"media max loss", node + "health: {media: {max_loss: 100}}", "health.media.max_loss: must be a percentage in [0, 100), got 100", 0},
		{"media max loss negative", node + "health: {media: {max_loss: -1}}", "health.media.max_loss: must be a percentage in [0, 100)", 0},
		{"media threshold", node + "health: {media: {threshold: 0}}", "health.media.threshold: must be >= 1, got 0", 0},
		{"media rise", node + "health: {media: {rise: 0}}", "health.media.rise: must be >= 1, got 0", 0},
		{"media target without user", node + `health: {media: {target: "sip:{node}"}}`, `health.media.target: "sip:{node}" is not a sip: URI with a user part`, 0},
		{"media target scheme", node + `health: {media: {target: "tel:+15551234"}}`, `health.media.target: "tel:+15551234" is not a sip: URI`, 0},
		{"media target empty", node + `health: {media: {target: ""}}`, `health.media.target: "" is not a sip: URI`, 0},
		{"node media target", `nodes: [{id: fs1, sip: "10.0.0.11:5060", media_target: "echo"}]`, `nodes[0].media_target: "echo" is not a sip: URI with a user part`, 0},

		// failover
		{"invite timeout", node + "failover: {invite_timeout: 0s}", "failover.invite_timeout: must be > 0, got 0s", 0},
		{"max attempts", node + "failover: {max_attempts: 0}", "failover.max_attempts: must be >= 1, got 0", 0},
		{"code not a failure", node + "failover: {codes: [200, 503]}", "failover.codes[0]: 200 is not a failure code (want 300-699)", 0},
		{"code out of range", node + "failover: {codes: [503, 700]}", "failover.codes[1]: 700 is not a failure code (want 300-699)", 0},
		{"ring timeout", node + "failover: {ring_timeout: 0s}", "failover.ring_timeout: must be > 0, got 0s", 0},
		{"retry after below 1s", node + "failover: {retry_after: 500ms}", "failover.retry_after: must be at least 1s, got 500ms", 0},
		{"retry after fraction", node + "failover: {retry_after: 1500ms}", "failover.retry_after: must be whole seconds (Retry-After has no fractions), got 1.5s", 0},

		// session
		{"store", node + "session: {store: mysql}", `session.store: unknown store "mysql" (want memory or redis)`, 0},
		{"max dialogs", node + "session: {max_dialogs: 0}", "session.max_dialogs: must be >= 1, got 0", 0},
		{"ttl", node + "session: {dialog_ttl: 0s}", "session.dialog_ttl: must be > 0, got 0s", 0},
		{"redis addr empty", node + `session: {store: redis, redis: {addrs: [""]}}`, `session.redis.addrs[0]: "" is not host:port`, 0},
		{"redis addr without port", node + `session: {store: redis, redis: {addrs: ["10.0.0.5:6379", "redis.example"]}}`, `session.redis.addrs[1]: "redis.example" is not host:port (missing port)`, 0},
		{"redis pool", node + "session: {store: redis, redis: {pool_size: 0}}", "session.redis.pool_size: must be >= 1, got 0", 0},
		{"redis timeout", node + "session: {store: redis, redis: {read_timeout: 0s}}", "session.redis.read_timeout: must be > 0, got 0s", 0},

		// admin, log
		{"admin listen", node + `admin: {listen: "9090"}`, `admin.listen: "9090" is not host:port (missing port)`, 0},
		{"log level", node + "log: {level: verbose}", `log.level: unknown level "verbose" (want debug, info, warn or error)`, 0},
		{"log format", node + "log: {format: text}", `log.format: unknown format "text" (want json or console)`, 0},

		// several problems are reported together
		{"all at once", "failover: {max_attempts: 0}\nlog: {level: loud}", "failover.max_attempts: must be >= 1, got 0", 3},
		{"tls without cert and key", node + `sip: {listen: ["tls://0.0.0.0:5061"]}`, "sip.tls.key: required by tls:// listener sip.listen[0]", 2},
		{"decode errors together", node + "bogus: 1\nfailover: {invite_timeout: 5, max_attempts: x}", `failover.max_attempts: want an integer, got "x"`, 3},
		{"unknown key beside a bad value", node + "bogus: 1\nfailover: {invite_timeout: 5}", `unknown key "bogus"`, 2},
		{"unknown keys together", node + "bogus: 1\nfailover: {invite_timout: 1s}\nhealth: {options: {fails: 2}}", `unknown key "health.options.fails"`, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := LoadBytes([]byte(tt.yaml))
			require.Error(t, err)
			assert.Nil(t, c)
			assert.Contains(t, err.Error(), tt.want)
			errs := max(tt.errs, 1)
			assert.Len(t, strings.Split(err.Error(), "\n"), errs, "problems reported:\n%v", err)
		})
	}
}

func TestLoadBytesDefaults(t *testing.T) {
	isolateEnv(t)
	c, err := LoadBytes([]byte(node))
	require.NoError(t, err)

	want := &Config{
		SIP: SIP{
			Listen:          []string{"udp://0.0.0.0:5060", "tcp://0.0.0.0:5060"},
			ShutdownTimeout: 30 * time.Second,
			UserAgent:       "sipbalancer",
			TLS:             TLS{ReloadCheck: 10 * time.Second},
		},
		Nodes:      []Node{{ID: "fs1", SIP: "10.0.0.11:5060", ESLPassword: "ClueCon", Weight: 1}},
		Dispatcher: Dispatcher{Policy: "least_load", HashKey: "call-id"},
		Health: Health{
			Options: OptionsProbe{Interval: time.Second, Timeout: 500 * time.Millisecond, Fall: 2, Rise: 2,
				AliveCodes: []string{"2xx", "404", "405", "481"}, DownOnRefused: true},
			Passive: Passive{Failures: 3, Cooldown: 10 * time.Second, FullHold: 5 * time.Second},
			ESL: ESLHealth{PollInterval: time.Second, ReplyTimeout: 2 * time.Second, MaxAge: 3 * time.Second,
				DownOnDisconnect: true, ProfileCheck: 5 * time.Second},
			CPU: CPUHealth{IdleMin: 5, For: time.Minute},
			Media: MediaProbe{Interval: 10 * time.Second, Target: "sip:echo@{node}", Duration: time.Second,
				Timeout: 5 * time.Second, Codec: "PCMU", MaxLoss: 20, Threshold: 2, Rise: 2},
		},
		Failover: Failover{
			InviteTimeout: time.Second,
			MaxAttempts:   3,
			Codes:         []int{408, 480, 500, 502, 503, 504},
			RingTimeout:   3 * time.Minute,
			RetryAfter:    time.Second,
		},
		Session: Session{
			Store: "memory",
			Redis: Redis{
				Addrs:         []string{"127.0.0.1:6379"},
				KeyPrefix:     "sipb",
				DialTimeout:   time.Second,
				ReadTimeout:   200 * time.Millisecond,
				WriteTimeout:  200 * time.Millisecond,
				PoolSize:      20,
				QueueSize:     65536,
				LookupTimeout: 200 * time.Millisecond,
			},
			EarlyTTL:      5 * time.Minute,
			DialogTTL:     12 * time.Hour,
			ReleaseLinger: 32 * time.Second,
			MaxDialogs:    1000000,
		},
		Admin: Admin{Listen: "127.0.0.1:9090"},
		Log:   Log{Level: "info", Format: "json", Sampling: true},
		// guard.go
		Security: Security{Untrusted: "drop"},
		Limits: Limits{
			Action:          "reply_503",
			PerSource:       PerSourceLimits{InviteBurst: 10, RequestBurst: 50, MaxSources: 100000},
			Global:          GlobalLimits{InviteBurst: 100},
			Message:         MessageLimits{MaxBytes: 16384, MaxHeaders: 100, MaxHeaderBytes: 4096, MaxVias: 70},
			TCP:             TCPLimits{MaxConnections: 10000, MaxPerSource: 100, IdleTimeout: 3 * time.Minute, ReadTimeout: 10 * time.Second},
			OverloadLatency: 50 * time.Millisecond,
		},
	}
	assert.Equal(t, want, c)
	assert.Equal(t, 1, c.RetryAfterSeconds())
}

func TestLoadBytesMedia(t *testing.T) {
	isolateEnv(t)
	c, err := LoadBytes([]byte(`
nodes:
  - {id: fs1, sip: "10.0.0.11:5060"}
  - {id: fs2, sip: "10.0.0.12:5060", media_target: "sip:9196@{node}"}
health: {media: {enabled: true, interval: 30s, codec: PCMA, max_loss: 0, target: "SIP:echo@media.example"}}
`))
	require.NoError(t, err)
	m := c.Health.Media
	assert.True(t, m.Enabled)
	assert.Equal(t, 30*time.Second, m.Interval)
	assert.Equal(t, "PCMA", m.Codec)
	assert.Zero(t, m.MaxLoss, "max_loss: 0 is kept: any loss is bad")
	assert.Equal(t, "SIP:echo@media.example", m.Target)
	assert.Equal(t, time.Second, m.Duration)
	assert.Equal(t, "sip:9196@{node}", c.Nodes[1].MediaTarget)
	assert.Empty(t, c.Nodes[0].MediaTarget)
}

func TestLoadBytesExplicitValuesKept(t *testing.T) {
	isolateEnv(t)
	c, err := LoadBytes([]byte(`
nodes: [{id: fs1, sip: "10.0.0.11:5060", esl: "10.0.0.11:8021", esl_password: 1234, weight: 3, priority: 2}]
admin: {listen: ""}
sip: {listen: [], user_agent: ""}
failover: {codes: [], retry_after: 5s}
session: {store: redis, redis: {addrs: "r1:6379, r2:6379", db: 0}}
`))
	require.NoError(t, err)
	assert.Empty(t, c.Admin.Listen, `admin.listen: "" disables the admin server`)
	assert.Empty(t, c.SIP.UserAgent)
	assert.Equal(t, []string{"udp://0.0.0.0:5060", "tcp://0.0.0.0:5060"}, c.SIP.Listen, "an empty list means the default")
	assert.Equal(t, []int{408, 480, 500, 502, 503, 504}, c.Failover.Codes, "an empty list means the default")
	assert.Equal(t, []string{"r1:6379", "r2:6379"}, c.Session.Redis.Addrs)
	assert.Equal(t, Node{ID: "fs1", SIP: "10.0.0.11:5060", ESL: "10.0.0.11:8021", ESLPassword: "1234", Weight: 3, Priority: 2}, c.Nodes[0])
	assert.Equal(t, 5, c.RetryAfterSeconds())
}

func TestLoadBytesEnv(t *testing.T) {
	const file = `
nodes: [{id: file1, sip: "10.0.0.99:5060"}]
failover: {invite_timeout: 1500ms}
`
	tests := []struct {
		name  string
		env   map[string]string
		check func(t *testing.T, c *Config)
	}{
		{"scalar", map[string]string{"SIPBALANCER_SESSION_TOKEN_SECRET": "s3cret"}, func(t *testing.T, c *Config) {
			assert.Equal(t, "s3cret", c.Session.TokenSecret)
		}},
		{"duration wins over file", map[string]string{"SIPBALANCER_FAILOVER_INVITE_TIMEOUT": "2s"}, func(t *testing.T, c *Config) {
			assert.Equal(t, 2*time.Second, c.Failover.InviteTimeout)
		}},
		{"file without env", nil, func(t *testing.T, c *Config) {
			assert.Equal(t, 1500*time.Millisecond, c.Failover.InviteTimeout)
		}},
		{"integer", map[string]string{"SIPBALANCER_HEALTH_OPTIONS_FALL": "5"}, func(t *testing.T, c *Config) {
			assert.Equal(t, 5, c.Health.Options.Fall)
		}},
		{"bool", map[string]string{"SIPBALANCER_SESSION_REDIS_TLS": "true"}, func(t *testing.T, c *Config) {
			assert.True(t, c.Session.Redis.TLS)
		}},
		{"list of strings", map[string]string{"SIPBALANCER_SIP_LISTEN": "udp://127.0.0.1:5060,tcp://127.0.0.1:5060"}, func(t *testing.T, c *Config) {
			assert.Equal(t, []string{"udp://127.0.0.1:5060", "tcp://127.0.0.1:5060"}, c.SIP.Listen)
		}},
		{"list of integers", map[string]string{"SIPBALANCER_FAILOVER_CODES": "503, 504"}, func(t *testing.T, c *Config) {
			assert.Equal(t, []int{503, 504}, c.Failover.Codes)
		}},
		{"nodes as JSON replace the file's", map[string]string{
			"SIPBALANCER_NODES": `[{"id":"fs1","sip":"10.0.0.11:5060","esl":"10.0.0.11:8021","weight":2},` +
				`{"id":"fs2","sip":"sip:10.0.0.12;transport=tcp","max_calls":100}]`,
		}, func(t *testing.T, c *Config) {
			assert.Equal(t, []Node{
				{ID: "fs1", SIP: "10.0.0.11:5060", ESL: "10.0.0.11:8021", ESLPassword: "ClueCon", Weight: 2},
				{ID: "fs2", SIP: "sip:10.0.0.12;transport=tcp", ESLPassword: "ClueCon", Weight: 1, MaxCalls: 100},
			}, c.Nodes)
		}},
		{"empty variable is unset", map[string]string{"SIPBALANCER_ADMIN_LISTEN": ""}, func(t *testing.T, c *Config) {
			assert.Equal(t, "127.0.0.1:9090", c.Admin.Listen)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isolateEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			c, err := LoadBytes([]byte(file))
			require.NoError(t, err)
			tt.check(t, c)
		})
	}
}

func TestLoadBytesEnvErrors(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"bare number duration", map[string]string{"SIPBALANCER_FAILOVER_INVITE_TIMEOUT": "2"}, `failover.invite_timeout: want a duration such as 1s, got "2"`},
		{"bad integer in list", map[string]string{"SIPBALANCER_FAILOVER_CODES": "503,five"}, `failover.codes[1]: want an integer, got "five"`},
		{"validated like the file", map[string]string{"SIPBALANCER_FAILOVER_MAX_ATTEMPTS": "0"}, "failover.max_attempts: must be >= 1, got 0"},
		{"nodes not JSON", map[string]string{"SIPBALANCER_NODES": "fs1=10.0.0.11:5060"}, "nodes: want a JSON array of objects"},
		{"nodes trailing data", map[string]string{"SIPBALANCER_NODES": `[{"id":"fs1","sip":"10.0.0.11:5060"}] x`}, "nodes: want a JSON array of objects"},
		{"nodes unknown key", map[string]string{"SIPBALANCER_NODES": `[{"id":"fs1","sip":"10.0.0.11:5060","wieght":2}]`}, `unknown key "nodes[0].wieght"`},
		{"nodes fractional weight", map[string]string{"SIPBALANCER_NODES": `[{"id":"fs1","sip":"10.0.0.11:5060","weight":1.5}]`}, "nodes[0].weight: want an integer, got 1.5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isolateEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			_, err := LoadBytes([]byte(node))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

// TestEnvReachesEveryKey guards the reflection walk: a key added to
// config.go must be settable from the environment without further work.
func TestEnvReachesEveryKey(t *testing.T) {
	keys := envKeys()
	require.Contains(t, keys, "nodes")
	require.Contains(t, keys, "session.redis.write_timeout")
	for _, key := range keys {
		t.Run(key, func(t *testing.T) {
			isolateEnv(t)
			t.Setenv(envName(key), "from-env")
			v, err := newViper(nil)
			require.NoError(t, err)
			assert.Equal(t, "from-env", v.Get(key))
		})
	}
}

func TestLoadExample(t *testing.T) {
	isolateEnv(t)
	c, err := Load(examplePath)
	require.NoError(t, err)
	require.Len(t, c.Nodes, 3)
	for i, n := range c.Nodes {
		assert.Equal(t, "fs"+string(rune('1'+i)), n.ID)
		assert.NotEmpty(t, n.ESL)
	}
	ls, err := c.Listeners()
	require.NoError(t, err)
	assert.Equal(t, []Listener{{"udp", "0.0.0.0:5060"}, {"tcp", "0.0.0.0:5060"}}, ls)
	// The example states the defaults, so apart from the nodes and trunks
	// it is Default().
	require.Len(t, c.Trunks, 1)
	d := Default()
	d.Nodes = c.Nodes
	d.Trunks = c.Trunks
	assert.Equal(t, d, c)
}

// TestExampleHasEveryKey keeps the example complete as keys are added.
func TestExampleHasEveryKey(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	require.NoError(t, err)
	v := viper.New()
	v.SetConfigType("yaml")
	require.NoError(t, v.ReadConfig(strings.NewReader(string(data))))
	for _, key := range envKeys() {
		assert.True(t, v.IsSet(key), "example lacks %s", key)
	}
	nodes, ok := v.Get("nodes").([]any)
	require.True(t, ok)
	first, ok := nodes[0].(map[string]any)
	require.True(t, ok)
	for i := range nodeType.NumField() {
		key := keyName(nodeType.Field(i))
		assert.Contains(t, first, key, "example nodes[0] lacks %s", key)
	}
	trunks, ok := v.Get("trunks").([]any)
	require.True(t, ok)
	trunk, ok := trunks[0].(map[string]any)
	require.True(t, ok)
	walkKeys(reflect.TypeFor[Trunk](), "", func(key string, _ reflect.Type) {
		var cur any = trunk
		for _, part := range strings.Split(key, ".") {
			m, ok := cur.(map[string]any)
			require.True(t, ok, "example trunks[0] lacks %s", key)
			cur, ok = m[part]
			require.True(t, ok, "example trunks[0] lacks %s", key)
		}
	})
}

func TestLoadFileErrors(t *testing.T) {
	isolateEnv(t)
	_, err := Load(filepath.Join(t.TempDir(), "missing.yaml"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "missing.yaml")

	path := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(path, []byte("nodes: [\n"), 0o600))
	_, err = Load(path)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "config "+path+": parse yaml")
}

func TestDefault(t *testing.T) {
	c := Default()
	assert.Empty(t, c.Nodes)
	require.EqualError(t, c.Validate(), "nodes: at least one node is required")

	c.Nodes = []Node{{ID: "fs1", SIP: "10.0.0.11:5060"}}
	c.applyDefaults()
	require.NoError(t, c.Validate())
	assert.Equal(t, Node{ID: "fs1", SIP: "10.0.0.11:5060", ESLPassword: "ClueCon", Weight: 1}, c.Nodes[0])

	// Two defaults share no list.
	Default().SIP.Listen[0] = "changed"
	assert.Equal(t, "udp://0.0.0.0:5060", Default().SIP.Listen[0])
}

func TestListeners(t *testing.T) {
	c := Default()
	c.SIP.Listen = []string{"udp://0.0.0.0:5060", "sctp://0.0.0.0:5060"}
	_, err := c.Listeners()
	require.EqualError(t, err, `sip.listen[1]: unsupported scheme "sctp" (want udp, tcp or tls)`)
}

func TestParseListen(t *testing.T) {
	tests := []struct {
		in      string
		want    Listener
		wantErr string
	}{
		{in: "udp://0.0.0.0:5060", want: Listener{"udp", "0.0.0.0:5060"}},
		{in: "TCP://127.0.0.1:5060", want: Listener{"tcp", "127.0.0.1:5060"}},
		{in: "tls://[::]:5061", want: Listener{"tls", "[::]:5061"}},
		{in: "udp://:5060", want: Listener{"udp", ":5060"}},
		{in: "udp://127.0.0.1:0", want: Listener{"udp", "127.0.0.1:0"}},
		{in: "tcp://localhost:5060", want: Listener{"tcp", "localhost:5060"}},
		{in: "0.0.0.0:5060", wantErr: "is not scheme://host:port"},
		{in: "ws://0.0.0.0:80", wantErr: `unsupported scheme "ws" (want udp, tcp or tls)`},
		{in: "udp://0.0.0.0", wantErr: "missing port"},
		{in: "udp://0.0.0.0:65536", wantErr: "port 65536 is out of range"},
		{in: "udp://0.0.0.0:5060/x", wantErr: `port "5060/x" is not a number`},
		{in: "udp://bad host:5060", wantErr: `invalid host "bad host"`},
		{in: "udp://::1:5060", wantErr: "IPv6 host in brackets"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseListen(tt.in)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestParseNodeSIP(t *testing.T) {
	tests := []struct {
		in      string
		want    NodeAddr
		wantErr string
	}{
		{in: "10.0.0.11:5060", want: NodeAddr{"10.0.0.11", 5060, "UDP"}},
		{in: "fs1.example:5080", want: NodeAddr{"fs1.example", 5080, "UDP"}},
		{in: "freeswitch_1:5060", want: NodeAddr{"freeswitch_1", 5060, "UDP"}},
		{in: "[2001:db8::11]:5060", want: NodeAddr{"2001:db8::11", 5060, "UDP"}},
		{in: "sip:10.0.0.11:5060;transport=tcp", want: NodeAddr{"10.0.0.11", 5060, "TCP"}},
		{in: "sip:10.0.0.11", want: NodeAddr{"10.0.0.11", 5060, "UDP"}},
		{in: "sip:10.0.0.11;transport=udp", want: NodeAddr{"10.0.0.11", 5060, "UDP"}},
		{in: "sip:10.0.0.11;transport=TLS", want: NodeAddr{"10.0.0.11", 5061, "TLS"}},
		{in: "sip:10.0.0.11:5080;transport=tls", want: NodeAddr{"10.0.0.11", 5080, "TLS"}},
		{in: "sips:fs1.example", want: NodeAddr{"fs1.example", 5061, "TLS"}},
		{in: "sips:host:5061", want: NodeAddr{"host", 5061, "TLS"}},
		{in: "sips:fs1.example:5071;transport=tcp", want: NodeAddr{"fs1.example", 5071, "TLS"}},
		{in: "SIP:[2001:db8::11];transport=tcp", want: NodeAddr{"2001:db8::11", 5060, "TCP"}},
		{in: "sip:[2001:db8::11]:5070", want: NodeAddr{"2001:db8::11", 5070, "UDP"}},

		{in: "10.0.0.1", wantErr: `"10.0.0.1" is not host:port or a sip: URI (missing port)`},
		{in: "fs1.example", wantErr: `"fs1.example" is not host:port or a sip: URI (missing port)`},
		{in: "10.0.0.1:0", wantErr: "port 0 is out of range"},
		{in: "10.0.0.1:70000", wantErr: "port 70000 is out of range"},
		{in: ":5060", wantErr: "missing host"},
		{in: "0.0.0.0:5060", wantErr: "unspecified address"},
		{in: "10.0.0.300:5060", wantErr: `invalid host "10.0.0.300"`},
		{in: "-fs1:5060", wantErr: `invalid host "-fs1"`},
		{in: "udp://10.0.0.1:5060", wantErr: "is not host:port or a sip: URI"},
		{in: "sip:fs@10.0.0.1", wantErr: "a user part is not allowed"},
		{in: "sip:10.0.0.1;transport=ws", wantErr: `unsupported transport "ws" (want udp, tcp or tls)`},
		{in: "sips:10.0.0.1;transport=udp", wantErr: "sips: cannot use transport=udp"},
		{in: "sip:10.0.0.1;lr", wantErr: `unsupported parameter "lr"`},
		{in: "sip:10.0.0.1;transport=tcp;transport=udp", wantErr: "transport given twice"},
		{in: "sip:10.0.0.1?X-A=b", wantErr: "headers are not allowed"},
		{in: "sip:", wantErr: "missing host"},
		{in: "sip:2001:db8::1", wantErr: "IPv6 host in brackets"},
		{in: "sip:[2001:db8::1", wantErr: "unclosed ["},
		{in: "sip:0.0.0.0", wantErr: "unspecified address"},
		{in: "sip://10.0.0.1:5060", wantErr: `invalid host "//10.0.0.1"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseNodeSIP(tt.in)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestNodeAddrHostPort(t *testing.T) {
	assert.Equal(t, "10.0.0.11:5060", NodeAddr{"10.0.0.11", 5060, "UDP"}.HostPort())
	assert.Equal(t, "[2001:db8::11]:5061", NodeAddr{"2001:db8::11", 5061, "TLS"}.HostPort())
}
