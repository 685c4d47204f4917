package redistest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"
)

// Sentinel timings: short, so that a failover completes within a few
// seconds of KillMaster.
const (
	// sentinelMaster is the name the sentinels monitor the master by.
	sentinelMaster = "sipb-test"
	// downAfter is how long the master must be unreachable before a sentinel
	// thinks it down (sentinel down-after-milliseconds).
	downAfter = 1000 * time.Millisecond
	// failoverTimeout is sentinel failover-timeout: how soon a failed
	// failover may be retried.
	failoverTimeout = 3000 * time.Millisecond
	// topologyTimeout bounds the wait for the sentinels to know each other
	// and the replicas before a test may rely on a failover.
	topologyTimeout = 20 * time.Second
	// failoverWait bounds WaitFailover.
	failoverWait = 20 * time.Second
)

// SentinelSet is a master, its replicas and three sentinels monitoring it,
// all on loopback. A failover after KillMaster completes in a few seconds.
type SentinelSet struct {
	t         testing.TB
	servers   []*Server // the master first, then the replicas
	sentinels []*Server
}

// StartSentinelSet starts a master, replicas replicas of it and three
// sentinels (quorum two), and waits until the replicas are in sync and every
// sentinel knows the replicas and the other two sentinels, so that a
// failover can happen as soon as the master dies.
func StartSentinelSet(t testing.TB, replicas int) *SentinelSet {
	t.Helper()
	if replicas < 1 {
		t.Fatalf("redistest: a sentinel set needs at least one replica, got %d", replicas)
	}
	s := &SentinelSet{t: t}
	// Without a diskless-sync delay of 0 the master waits 5 s for more
	// replicas before the first full sync.
	const noDelay = "repl-diskless-sync-delay 0"
	master := Start(t, WithConfig(noDelay))
	s.servers = append(s.servers, master)
	for range replicas {
		s.servers = append(s.servers, Start(t, WithConfig(noDelay, fmt.Sprintf("replicaof 127.0.0.1 %d", master.Port()))))
	}
	for _, r := range s.servers[1:] {
		err := waitUntil(topologyTimeout, func() error {
			info, err := r.Info("replication")
			if err != nil {
				return err
			}
			if info["master_link_status"] != "up" {
				return fmt.Errorf("master_link_status %q", info["master_link_status"])
			}
			return nil
		})
		if err != nil {
			t.Fatalf("redistest: replica %s never synced with %s: %v", r.Addr(), master.Addr(), err)
		}
	}
	// Sentinels find each other through hello messages every 2 s, which
	// makes a cold start take seconds. Giving each one its ID, its peers
	// and the replicas up front (the lines a sentinel writes into its own
	// config once it has learnt them) makes the topology known at once.
	ids, ports := make([]string, 3), make([]int, 3)
	for i := range 3 {
		ids[i] = randomID()
		port, err := freePort(false)
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		ports[i] = port
	}
	for i := range 3 {
		lines := []string{
			fmt.Sprintf("sentinel myid %s", ids[i]),
			fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 2", sentinelMaster, master.Port()),
			fmt.Sprintf("sentinel down-after-milliseconds %s %d", sentinelMaster, downAfter.Milliseconds()),
			fmt.Sprintf("sentinel failover-timeout %s %d", sentinelMaster, failoverTimeout.Milliseconds()),
			fmt.Sprintf("sentinel parallel-syncs %s 1", sentinelMaster),
		}
		for _, r := range s.servers[1:] {
			lines = append(lines, fmt.Sprintf("sentinel known-replica %s 127.0.0.1 %d", sentinelMaster, r.Port()))
		}
		for j := range 3 {
			if j != i {
				lines = append(lines, fmt.Sprintf("sentinel known-sentinel %s 127.0.0.1 %d %s", sentinelMaster, ports[j], ids[j]))
			}
		}
		s.sentinels = append(s.sentinels, start(t, config{sentinel: true, port: ports[i], lines: lines}))
	}
	for _, sn := range s.sentinels {
		err := waitUntil(topologyTimeout, func() error {
			v, err := sn.Do("SENTINEL", "MASTER", sentinelMaster)
			if err != nil {
				return err
			}
			m := pairs(v)
			if m["num-other-sentinels"] != "2" || m["num-slaves"] != strconv.Itoa(replicas) {
				return fmt.Errorf("sentinel sees %s other sentinels and %s replicas", m["num-other-sentinels"], m["num-slaves"])
			}
			return nil
		})
		if err != nil {
			t.Fatalf("redistest: sentinel %s never learnt the topology: %v", sn.Addr(), err)
		}
	}
	return s
}

// MasterName is the name the sentinels know the master by.
func (s *SentinelSet) MasterName() string { return sentinelMaster }

// SentinelAddrs returns the sentinels' addresses.
func (s *SentinelSet) SentinelAddrs() []string {
	out := make([]string, len(s.sentinels))
	for i, sn := range s.sentinels {
		out[i] = sn.Addr()
	}
	return out
}

// Sentinels returns the sentinel processes.
func (s *SentinelSet) Sentinels() []*Server { return s.sentinels }

// Servers returns the data servers: the original master first, then the
// replicas, whatever their roles are now.
func (s *SentinelSet) Servers() []*Server { return s.servers }

// Master returns the server the sentinels currently name as master.
func (s *SentinelSet) Master() *Server {
	s.t.Helper()
	addr, err := s.masterAddr()
	if err != nil {
		s.t.Fatalf("redistest: %v", err)
	}
	srv := s.byAddr(addr)
	if srv == nil {
		s.t.Fatalf("redistest: sentinels name %s as master, which is none of this set's servers", addr)
	}
	return srv
}

// KillMaster kills the current master with SIGKILL and returns it. The
// sentinels then fail over to a replica; WaitFailover waits for that.
func (s *SentinelSet) KillMaster() *Server {
	s.t.Helper()
	m := s.Master()
	m.Stop()
	return m
}

// WaitFailover waits until a majority of the sentinels name a master other
// than old and that server reports role:master, and returns it. It fails the
// test if that takes longer than 20 s.
func (s *SentinelSet) WaitFailover(old *Server) *Server {
	s.t.Helper()
	var promoted *Server
	err := waitUntil(failoverWait, func() error {
		votes := map[string]int{}
		for _, sn := range s.sentinels {
			if !sn.Running() {
				continue
			}
			v, err := sn.Do("SENTINEL", "GET-MASTER-ADDR-BY-NAME", sentinelMaster)
			if err != nil {
				continue
			}
			if arr, ok := v.([]any); ok && len(arr) == 2 {
				host, _ := arr[0].(string)
				port, _ := arr[1].(string)
				votes[net.JoinHostPort(host, port)]++
			}
		}
		for addr, n := range votes {
			if addr == old.Addr() || n < 2 {
				continue
			}
			srv := s.byAddr(addr)
			if srv == nil {
				return fmt.Errorf("sentinels name unknown master %s", addr)
			}
			info, err := srv.Info("replication")
			if err != nil {
				return err
			}
			if info["role"] != "master" {
				return fmt.Errorf("%s is named master but reports role %q", addr, info["role"])
			}
			promoted = srv
			return nil
		}
		return fmt.Errorf("sentinels still name %v", votes)
	})
	if err != nil {
		s.t.Fatalf("redistest: no failover away from %s within %s: %v", old.Addr(), failoverWait, err)
	}
	return promoted
}

func (s *SentinelSet) masterAddr() (string, error) {
	var errs []error
	for _, sn := range s.sentinels {
		if !sn.Running() {
			continue
		}
		v, err := sn.Do("SENTINEL", "GET-MASTER-ADDR-BY-NAME", sentinelMaster)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if arr, ok := v.([]any); ok && len(arr) == 2 {
			host, _ := arr[0].(string)
			port, _ := arr[1].(string)
			return net.JoinHostPort(host, port), nil
		}
		errs = append(errs, fmt.Errorf("sentinel %s: unexpected reply %v", sn.Addr(), v))
	}
	return "", fmt.Errorf("no sentinel names a master: %w", errors.Join(errs...))
}

func (s *SentinelSet) byAddr(addr string) *Server {
	for _, srv := range s.servers {
		if srv.Addr() == addr {
			return srv
		}
	}
	return nil
}

// randomID returns a sentinel run ID: 40 hex digits.
func randomID() string {
	var b [20]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
