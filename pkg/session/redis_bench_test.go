package session_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sipbalancer/sipbalancer/internal/redistest"
	"github.com/sipbalancer/sipbalancer/pkg/session"
)

// Benchmarks of the Redis store against a real redis-server on loopback.
//
//	go test -run '^$' -bench Redis -benchtime 2s ./pkg/session/
//
// BenchmarkRedisBind is what a Bind costs the SIP path (an enqueue: no
// network); BenchmarkRedisLookup is a Lookup's round trip, with p50 and p99;
// BenchmarkRedisWriteThroughput is how many writes per second the writer
// gets into Redis.

// benchIDs returns n distinct Call-IDs.
func benchIDs(n int) []string {
	ids := make([]string, n)
	prefix := uniq("bench")
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%d@bench.invalid", prefix, i)
	}
	return ids
}

func BenchmarkRedisBind(b *testing.B) {
	srv := redistest.Start(b)
	s := newRedisStore(b, session.RedisOptions{Addrs: []string{srv.Addr()}, QueueSize: 1 << 18, BacklogSize: 1 << 18})
	ids := benchIDs(1 << 16)
	ctx := context.Background()

	// Serial: the cost of an accepted write. Every 16384 writes the clock
	// stops until the writer has caught up, so the queue never overflows
	// (a refused write is cheaper and would flatter the figure).
	b.Run("Serial", func(b *testing.B) {
		dropped := s.Stats().Dropped
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			_ = s.Bind(ctx, session.Binding{CallID: ids[i&(len(ids)-1)], NodeID: "node-1"}, time.Minute)
			i++
			if i%16384 == 0 {
				b.StopTimer()
				waitWritten(b, s)
				b.StartTimer()
			}
		}
		b.ReportMetric(float64(s.Stats().Dropped-dropped)/float64(b.N), "dropped/op")
	})
	// Parallel: callers on every CPU, offering far more writes per second
	// than the writer (and Redis) take; dropped/op shows how many the queue
	// refused.
	waitWritten(b, s)
	b.Run("Parallel", func(b *testing.B) {
		dropped := s.Stats().Dropped
		b.ReportAllocs()
		var mu sync.Mutex
		next := 0
		b.RunParallel(func(pb *testing.PB) {
			mu.Lock()
			i := next << 12
			next++
			mu.Unlock()
			for pb.Next() {
				_ = s.Bind(ctx, session.Binding{CallID: ids[i&(len(ids)-1)], NodeID: "node-1"}, time.Minute)
				i++
			}
		})
		b.ReportMetric(float64(s.Stats().Dropped-dropped)/float64(b.N), "dropped/op")
	})
	waitWritten(b, s)
}

func BenchmarkRedisLookup(b *testing.B) {
	srv := redistest.Start(b)
	s := newRedisStore(b, session.RedisOptions{Addrs: []string{srv.Addr()}})
	ids := benchIDs(10_000)
	ctx := context.Background()
	for i, id := range ids {
		if err := s.Confirm(ctx, id, fmt.Sprintf("node-%d", i%8), time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	// Written: Lookups go to Redis, not to the overlay.
	waitWritten(b, s)

	b.Run("Serial", func(b *testing.B) {
		lat := make([]time.Duration, 0, 1<<16)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			start := time.Now()
			if _, err := s.Lookup(ctx, ids[i%len(ids)]); err != nil {
				b.Fatal(err)
			}
			if len(lat) < cap(lat) {
				lat = append(lat, time.Since(start))
			}
			i++
		}
		reportPercentiles(b, lat)
	})
	b.Run("Parallel", func(b *testing.B) {
		var mu sync.Mutex
		var all []time.Duration
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			lat := make([]time.Duration, 0, 1<<14)
			i := 0
			for pb.Next() {
				start := time.Now()
				if _, err := s.Lookup(ctx, ids[i%len(ids)]); err != nil {
					b.Error(err)
					return
				}
				if len(lat) < cap(lat) {
					lat = append(lat, time.Since(start))
				}
				i += 7
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		})
		reportPercentiles(b, all)
	})
}

// reportPercentiles reports the p50 and p99 of lat in microseconds.
func reportPercentiles(b *testing.B, lat []time.Duration) {
	b.Helper()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[int(p*float64(len(lat)-1))]) / float64(time.Microsecond)
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

func BenchmarkRedisWriteThroughput(b *testing.B) {
	srv := redistest.Start(b)
	s := newRedisStore(b, session.RedisOptions{Addrs: []string{srv.Addr()}, QueueSize: 1 << 16, BacklogSize: 1 << 16})
	ids := benchIDs(1 << 16)
	ctx := context.Background()
	const chunk = 16384
	written := s.Stats().Written
	b.ResetTimer()
	start := time.Now()
	for done := 0; done < b.N; {
		n := min(chunk, b.N-done)
		for i := range n {
			id := ids[(done+i)&(len(ids)-1)]
			if err := s.Bind(ctx, session.Binding{CallID: id, NodeID: "node-1"}, time.Minute); err != nil {
				b.Fatal(err)
			}
		}
		done += n
		// Wait for the writer, so that the queue never overflows.
		for s.Stats().Written-written < uint64(done) {
			time.Sleep(100 * time.Microsecond)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "writes/s")
}
