package sip

import (
	"context"
	"runtime/metrics"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Overload shedding. When the balancer's own CPU is saturated, every new
// call makes things worse: its INVITE costs little, but the fifteen
// messages that follow cost a lot, the receive buffer fills, answers are
// dropped, transactions time out and retransmit, and a busy balancer turns
// into one that loses calls — or makes healthy nodes look dead. Kamailio
// does exactly that. Before it gets there, new calls are refused at once
// with 503 and Retry-After (counted, reason overload), which the carrier
// takes to another trunk; calls already up keep all the CPU there is.
//
// The signal is the Go scheduler's own: how long runnable goroutines wait
// for a CPU (runtime/metrics /sched/latencies:seconds), sampled every
// 100 ms. It rises only when the process is CPU-bound, whatever the
// machine, the message mix or the number of cores, and it does not depend
// on traffic that never reached us. The percentile is sampled whether or
// not shedding is on, for the sipbalancer_sched_latency_p99_seconds gauge
// that tells an operator how close to the limit the instance runs.
type overload struct {
	threshold atomic.Int64 // nanoseconds; 0: measure only
	shedding  atomic.Bool
	p99       atomic.Int64 // nanoseconds, last sample
	log       *zap.Logger
}

const schedMetric = "/sched/latencies:seconds"

// run samples until ctx ends; gate decides from each sample. A sample
// without any scheduling observed says nothing and changes nothing.
func (o *overload) run(ctx context.Context) {
	sample := []metrics.Sample{{Name: schedMetric}}
	metrics.Read(sample)
	if sample[0].Value.Kind() != metrics.KindFloat64Histogram {
		o.log.Warn("overload shedding off: the runtime does not report scheduling latency")
		return
	}
	prev := append([]uint64(nil), sample[0].Value.Float64Histogram().Counts...)
	t := time.NewTicker(overloadSample)
	defer t.Stop()
	var g gate
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		metrics.Read(sample)
		h := sample[0].Value.Float64Histogram()
		p99, ok := deltaQuantile(h.Counts, prev, h.Buckets, 0.99)
		prev = append(prev[:0], h.Counts...)
		if !ok {
			continue
		}
		o.p99.Store(int64(p99 * float64(time.Second)))
		limit := time.Duration(o.threshold.Load()).Seconds()
		if !g.step(p99, limit) {
			continue
		}
		o.shedding.Store(g.shedding)
		lat := zap.Duration("sched_latency_p99", time.Duration(p99*float64(time.Second)))
		if g.shedding {
			o.log.Warn("overloaded: refusing new calls with 503", lat)
		} else {
			o.log.Info("no longer overloaded: taking new calls", lat)
		}
	}
}

// gate turns samples of the scheduling latency into shedding on or off.
// Shedding starts when overloadHotSamples samples in a row exceed the
// limit, and stops after overloadCalmSamples in a row below half of it.
// One hot sample is not enough: a garbage collection or a burst of
// arrivals pushes a single 100 ms percentile over the limit on a machine
// that is keeping up (measured: 50 ms at 2,500 calls/s on two cores that
// carried the rate), and every shed episode fails a second's worth of new
// calls. The gap between the two levels keeps it from flapping.
type gate struct {
	shedding bool
	hot      int // consecutive samples over the limit while not shedding
	calm     int // consecutive samples under half the limit while shedding
}

// step takes one sample (seconds) against limit (seconds; 0 or less: off)
// and reports whether shedding changed.
func (g *gate) step(p99, limit float64) (changed bool) {
	was := g.shedding
	switch {
	case limit <= 0:
		*g = gate{}
	case !g.shedding && p99 > limit:
		if g.hot++; g.hot >= overloadHotSamples {
			*g = gate{shedding: true}
		}
	case !g.shedding:
		g.hot = 0
	case p99 < limit/2:
		if g.calm++; g.calm >= overloadCalmSamples {
			*g = gate{}
		}
	default:
		g.calm = 0
	}
	return g.shedding != was
}

const (
	overloadSample = 100 * time.Millisecond
	// overloadHotSamples is how many samples in a row over the limit start
	// shedding: 300 ms of sustained overload, well before the callers'
	// first INVITE retransmission (T1, 500 ms) would add to the load.
	overloadHotSamples = 3
	// overloadCalmSamples is how many calm samples in a row end shedding:
	// a second, as long as the Retry-After a shed caller waits.
	overloadCalmSamples = 10
)

// deltaQuantile is quantile q of the histogram cur-prev (bucket i spans
// buckets[i] to buckets[i+1]; the answer is its upper bound); ok is false
// without observations.
func deltaQuantile(cur, prev []uint64, buckets []float64, q float64) (v float64, ok bool) {
	n := min(len(cur), len(prev))
	var total uint64
	for i := range n {
		total += cur[i] - prev[i]
	}
	if total == 0 {
		return 0, false
	}
	rank := uint64(float64(total) * q)
	var seen uint64
	for i := range n {
		seen += cur[i] - prev[i]
		if seen > rank {
			if i+1 < len(buckets) {
				return buckets[i+1], true
			}
			return buckets[i], true
		}
	}
	return buckets[len(buckets)-1], true
}

// SchedLatencyP99 is the 99th percentile of the Go scheduler's latency over
// the last 100 ms: how long work waited for a CPU.
func (p *Proxy) SchedLatencyP99() time.Duration { return time.Duration(p.overload.p99.Load()) }

// SetOverloadLatency changes Config.OverloadLatency while the proxy runs
// (configuration reload); 0 stops shedding at the next sample.
func (p *Proxy) SetOverloadLatency(d time.Duration) { p.overload.threshold.Store(int64(d)) }

// OverloadLatency is the shedding threshold in force (0: off).
func (p *Proxy) OverloadLatency() time.Duration { return time.Duration(p.overload.threshold.Load()) }

// Overloaded reports whether new calls are being shed for lack of CPU.
func (p *Proxy) Overloaded() bool { return p.overload.shedding.Load() }
