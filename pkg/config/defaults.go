package config

import (
	"fmt"
	"reflect"
	"time"
)

// defaults holds the default of every key, as stated on the fields in
// config.go. Keys whose default is the zero value are left out.
func defaults() Config {
	return Config{
		SIP: SIP{
			Listen:          []string{"udp://0.0.0.0:5060", "tcp://0.0.0.0:5060"},
			ShutdownTimeout: 30 * time.Second,
			UserAgent:       "sipbalancer",
			TLS:             TLS{ReloadCheck: 10 * time.Second},
		},
		Dispatcher: Dispatcher{
			Policy:  PolicyLeastLoad,
			HashKey: "call-id",
		},
		Health: Health{
			Options: OptionsProbe{
				Interval:      time.Second,
				Timeout:       500 * time.Millisecond,
				Fall:          2,
				Rise:          2,
				AliveCodes:    []string{"2xx", "404", "405", "481"},
				DownOnRefused: true,
			},
			Passive: Passive{
				Failures: 3,
				Cooldown: 10 * time.Second,
				FullHold: 5 * time.Second,
			},
			ESL: ESLHealth{
				PollInterval:     time.Second,
				ReplyTimeout:     2 * time.Second,
				MaxAge:           3 * time.Second,
				DownOnDisconnect: true,
				ProfileCheck:     5 * time.Second,
			},
			CPU: CPUHealth{
				IdleMin: 5,
				For:     60 * time.Second,
			},
			Media: MediaProbe{
				Interval:  10 * time.Second,
				Target:    "sip:echo@{node}",
				Duration:  time.Second,
				Timeout:   5 * time.Second,
				Codec:     "PCMU",
				MaxLoss:   20,
				Threshold: 2,
				Rise:      2,
			},
		},
		Failover: Failover{
			InviteTimeout: time.Second,
			MaxAttempts:   3,
			Codes:         []int{408, 480, 500, 502, 503, 504},
			RingTimeout:   3 * time.Minute,
			RetryAfter:    time.Second,
		},
		Session: Session{
			Store: StoreMemory,
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
		Admin: Admin{
			Listen: "127.0.0.1:9090",
		},
		Log: Log{
			Level:    "info",
			Format:   "json",
			Sampling: true,
		},
		Security: Security{Untrusted: UntrustedDrop},
		Limits: Limits{
			Action: LimitReply503,
			PerSource: PerSourceLimits{
				InviteBurst:  10,
				RequestBurst: 50,
				MaxSources:   100000,
			},
			Global:  GlobalLimits{InviteBurst: 100},
			Message: MessageLimits{MaxBytes: 16384, MaxHeaders: 100, MaxHeaderBytes: 4096, MaxVias: 70},
			TCP: TCPLimits{
				MaxConnections: 10000,
				MaxPerSource:   100,
				IdleTimeout:    3 * time.Minute,
				ReadTimeout:    10 * time.Second,
			},
			OverloadLatency: 50 * time.Millisecond,
		},
	}
}

// defaultNode holds the defaults of every entry of nodes.
func defaultNode() Node {
	return Node{
		ESLPassword: "ClueCon",
		Weight:      1,
	}
}

// applyDefaults fills every zero-valued key with its default (the analogue of
// Caddy's Provision). It is for a Config built in Go, where zero means unset.
func (c *Config) applyDefaults() {
	c.applyDefaultsExcept(nil)
}

// applyDefaultsExcept is applyDefaults leaving alone the keys in given, which
// Load fills with the keys the file or the environment wrote: an explicit 0
// or "" is kept, for Validate to reject (fall: 0) or to honour (admin.listen:
// ""). An empty list is never kept: it means the default list.
func (c *Config) applyDefaultsExcept(given map[string]bool) {
	fill(reflect.ValueOf(c).Elem(), reflect.ValueOf(defaults()), "", given)
}

var (
	nodeType         = reflect.TypeFor[Node]()
	defaultNodeValue = reflect.ValueOf(defaultNode())
)

// fill copies each default in def into the matching zero field of dst, walking
// the tree by its mapstructure tags so that a key added to config.go needs
// only its default added to defaults.
func fill(dst, def reflect.Value, prefix string, given map[string]bool) {
	t := dst.Type()
	for i := range t.NumField() {
		name := keyName(t.Field(i))
		if name == "" {
			continue
		}
		key := joinKey(prefix, name)
		d, dv := dst.Field(i), def.Field(i)
		switch ft := d.Type(); {
		case ft.Kind() == reflect.Slice && ft.Elem() == nodeType:
			for j := range d.Len() {
				fill(d.Index(j), defaultNodeValue, fmt.Sprintf("%s[%d]", key, j), given)
			}
		case ft.Kind() == reflect.Struct && ft != durationType:
			fill(d, dv, key, given)
		case ft.Kind() == reflect.Slice:
			if d.Len() == 0 && dv.Len() > 0 {
				// A copy, so that no two configs share a backing array.
				d.Set(reflect.AppendSlice(reflect.MakeSlice(ft, 0, dv.Len()), dv))
			}
		default:
			if d.IsZero() && !given[key] {
				d.Set(dv)
			}
		}
	}
}
