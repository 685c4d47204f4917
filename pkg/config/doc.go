// Package config loads, defaults and validates the sipbalancer configuration.
//
// The YAML shape (see Config and configs/sipbalancer.example.yaml) is a public
// interface: keys may be added, never renamed.
//
// # Lifecycle
//
// A configuration goes through three steps, each in one place:
//
//  1. decode: Load or LoadBytes reads the YAML, overlays the SIPBALANCER_*
//     environment variables and decodes the result into Config. Unknown keys,
//     values of the wrong type and durations that are not Go duration strings
//     are errors here.
//  2. applyDefaults: every key that was not given gets the default stated on
//     its field in config.go. A key written explicitly keeps its value even when
//     that value is zero, so `fall: 0` is reported by Validate rather than
//     silently replaced, and `admin.listen: ""` really disables the admin
//     server. An empty list counts as not given: `sip.listen: []` means the
//     default listeners. For a Config built in Go, every zero value is filled.
//  3. Validate: every rule is checked and every problem is reported at once
//     (errors.Join). Validate does no I/O, so a reload can run it freely.
//
// Every error names its key as written in YAML, with the index for list
// entries, then the problem: `nodes[1].sip: "10.0.0.1" is not host:port or a
// sip: URI`, `failover.max_attempts: must be >= 1, got 0`,
// `unknown key "failover.invite_timout"`. Load adds the file name only to
// errors reading or parsing the file; the caller knows which file it loaded.
//
// # Environment
//
// Every key can be set by an environment variable named SIPBALANCER_ followed
// by the key path in upper case with dots replaced by underscores. The
// environment wins over the file, and the file wins over the defaults:
//
//	SIPBALANCER_SESSION_TOKEN_SECRET=s3cret
//	SIPBALANCER_FAILOVER_INVITE_TIMEOUT=2s
//	SIPBALANCER_SIP_LISTEN=udp://127.0.0.1:5060,tcp://127.0.0.1:5060
//	SIPBALANCER_FAILOVER_CODES=503,504
//
// A list of scalars is written comma-separated. The node list is replaced as a
// whole by SIPBALANCER_NODES holding a JSON array of node objects with the
// same keys as the YAML:
//
//	SIPBALANCER_NODES='[{"id":"fs1","sip":"10.0.0.11:5060","esl":"10.0.0.11:8021"}]'
//
// Single node fields cannot be set from the environment. A variable set to
// the empty string counts as unset, so the environment can change a key but
// not blank it; blank it in the file.
package config
