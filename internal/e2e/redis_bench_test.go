package e2e

import (
	"context"
	"net"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sipbalancer/sipbalancer/internal/redistest"
	"github.com/sipbalancer/sipbalancer/pkg/callgen"
)

// delayRelay forwards TCP to target, holding every chunk for delay in each
// direction: a Redis that answers 2×delay slower.
func delayRelay(tb testing.TB, target string, delay time.Duration) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	var wg sync.WaitGroup
	tb.Cleanup(func() { ln.Close(); wg.Wait() })
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		defer dst.Close()
		buf := make([]byte, 64<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				time.Sleep(delay) // the point of this relay: added latency
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			wg.Add(2)
			go pipe(r, c)
			go pipe(c, r)
		}
	}()
	return ln.Addr().String()
}

// BenchmarkCallSetupRedisLatency shows that call setup does not wait on
// Redis: the same calls through the balancer with Redis direct and with
// Redis answering 10 ms slower (5 ms each way) have the same setup time.
// Reported: setup p50/p99 in µs, per sub-benchmark.
//
//	go test -run '^$' -bench CallSetupRedisLatency -benchtime 400x ./internal/e2e/
func BenchmarkCallSetupRedisLatency(b *testing.B) {
	r := redistest.Start(b)
	for _, tc := range []struct {
		name  string
		delay time.Duration
	}{{"redis_direct", 0}, {"redis_plus_10ms_rtt", 5 * time.Millisecond}} {
		b.Run(tc.name, func(b *testing.B) {
			addr := r.Addr()
			if tc.delay > 0 {
				addr = delayRelay(b, r.Addr(), tc.delay)
			}
			c := startCluster(b, clusterOpts{nodes: 3, session: redisSession(addr, "")})
			cfg := callgen.NewConfig(c.addr("udp"))
			cfg.ReInvite = false
			cfg.Timeout = 10 * time.Second
			u, err := callgen.NewUAC(cfg)
			require.NoError(b, err)
			defer u.Close()
			setups := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				res := u.Call(context.Background())
				if !res.OK() {
					b.Fatalf("call failed: %+v", res)
				}
				setups = append(setups, res.SetupTime)
			}
			b.StopTimer()
			sort.Slice(setups, func(i, j int) bool { return setups[i] < setups[j] })
			b.ReportMetric(float64(setups[len(setups)/2].Microseconds()), "setup-p50-µs")
			b.ReportMetric(float64(setups[len(setups)*99/100].Microseconds()), "setup-p99-µs")
			eventually(b, func() bool { return c.app.Redis().Stats().Written > 0 }, "nothing reached Redis")
		})
	}
}
