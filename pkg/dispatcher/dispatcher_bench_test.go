package dispatcher

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkPick measures Dispatcher.Pick for each policy on 64 nodes, from
// all cores at once, asking for three candidates (the default
// failover.max_attempts) into a dst each goroutine reuses, as the proxy does.
// DESIGN.md's targets: <= 100 ns/op and 0 allocs/op.
//
// To keep the policies comparable the pool is the same for all of them and
// realistic rather than idle: weights 1 to 4, a few nodes out (down, full,
// draining), every node with some active and in-flight calls and an ESL load
// report, so least_load computes real scores and hash takes its weighted
// path. Nothing writes to the nodes during the run: the cost of counter
// updates belongs to the proxy's benchmarks.
func BenchmarkPick(b *testing.B) {
	for _, name := range PolicyNames() {
		b.Run(name+"/nodes=64", func(b *testing.B) {
			benchPicks(b, benchDispatcher(b, name, 64))
		})
	}
}

// benchPicks runs d.Pick from all cores, asking for three candidates into a
// dst each goroutine reuses, as the proxy does. Keys are distinct and fixed
// per goroutine: hashing the Call-ID happens at the edge, not in Pick.
func benchPicks(b *testing.B, d *Dispatcher) {
	var seq atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		dst := make([]*Node, 0, 3)
		k := Key{Hash: seq.Add(1) * 0x9e3779b97f4a7c15}
		for pb.Next() {
			dst = d.Pick(k, dst[:0])
			if len(dst) == 0 {
				b.Error("no candidate")
				return
			}
			k.Hash++
		}
	})
}

// BenchmarkPickEqualWeights is BenchmarkPick with equal weights and all nodes
// Up: the common case, and the path where hash uses no floating point.
func BenchmarkPickEqualWeights(b *testing.B) {
	for _, name := range PolicyNames() {
		b.Run(name+"/nodes=64", func(b *testing.B) {
			benchPicks(b, testDispatcher(b, name, testSpecs(64)))
		})
	}
}

// BenchmarkPickHashWeights is hash's cost by the number of distinct weights
// in the pool (weight classes): up to maxWeighedClasses it weighs three
// nodes per class, beyond that every node.
func BenchmarkPickHashWeights(b *testing.B) {
	for _, classes := range []int{1, 2, 4, maxWeighedClasses, 64} {
		b.Run(fmt.Sprintf("classes=%d/nodes=64", classes), func(b *testing.B) {
			specs := testSpecs(64)
			for i := range specs {
				specs[i].Weight = 1 + i%classes
			}
			benchPicks(b, testDispatcher(b, "hash", specs))
		})
	}
}

// BenchmarkPickSerial is one goroutine: the latency one call sees.
func BenchmarkPickSerial(b *testing.B) {
	for _, name := range PolicyNames() {
		b.Run(name+"/nodes=64", func(b *testing.B) {
			d := benchDispatcher(b, name, 64)
			dst := make([]*Node, 0, 3)
			k := Key{Hash: 1}
			b.ReportAllocs()
			for b.Loop() {
				dst = d.Pick(k, dst[:0])
				k.Hash++
			}
		})
	}
}

// benchDispatcher builds the realistic pool BenchmarkPick describes.
func benchDispatcher(tb testing.TB, policy string, n int) *Dispatcher {
	tb.Helper()
	specs := testSpecs(n)
	for i := range specs {
		specs[i].Weight = 1 + i%4
		specs[i].Priority = i / 16
		if i%8 == 0 {
			specs[i].MaxCalls = 500
		}
	}
	d := testDispatcher(tb, policy, specs)
	now := time.Now()
	for i, nd := range d.Snapshot().Nodes() {
		nd.SetActive(int64(10 + i*7%90))
		nd.AddInflight(int64(i % 3))
		nd.SetLoad(&Load{Sessions: int64(20 + i*11%150), MaxSessions: 1000, IdleCPU: float64(40 + i%50), At: now})
		switch i % 21 {
		case 5:
			nd.SetState(StateDown)
		case 12:
			nd.SetState(StateFull)
		case 19:
			nd.SetState(StateDraining)
		}
	}
	return d
}
