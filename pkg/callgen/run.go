package callgen

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// Report summarises a Run.
type Report struct {
	Results   []CallResult  `json:"results,omitempty"` // in the order the calls were placed
	Attempted int           `json:"attempted"`
	Succeeded int           `json:"succeeded"` // CallResult.OK
	Failed    int           `json:"failed"`
	SetupP50  time.Duration `json:"setup_p50"` // over calls that got an 18x or 2xx
	SetupP99  time.Duration `json:"setup_p99"`
	Duration  time.Duration `json:"duration"` // first INVITE to last call finished
	// RTP sums up the calls' media (Config.RTP); nil without it.
	RTP *RTPReport `json:"rtp,omitempty"`
}

// RTPReport sums up the media of the calls whose media was measured
// (answered, with Config.RTP). Per-call figures are in Report.Results.
type RTPReport struct {
	Calls    int   `json:"calls"`
	Sent     int64 `json:"sent"`
	Received int64 `json:"received"`
	Lost     int64 `json:"lost"`   // sequence-number loss of the received streams
	Echoed   int64 `json:"echoed"` // our packets that came back (echo targets)
	// WithLoss counts calls whose loss ratio is above zero, NoMedia those
	// that received nothing at all, Stopped those whose far end's media
	// stopped before the call ended (see CallResult.RTPStopped).
	WithLoss int `json:"with_loss"`
	NoMedia  int `json:"no_media"`
	Stopped  int `json:"stopped"`
	// Loss ratio per call (CallResult.RTPLoss) and jitter per call, over
	// the calls that received media.
	LossP50   float64       `json:"loss_p50"`
	LossP99   float64       `json:"loss_p99"`
	LossMax   float64       `json:"loss_max"`
	JitterP50 time.Duration `json:"jitter_p50"`
	JitterP99 time.Duration `json:"jitter_p99"`
	JitterMax time.Duration `json:"jitter_max"`
}

// Run places cfg.Calls calls through one UAC, at most cfg.Rate new calls per
// second and cfg.Concurrency at a time, waits for all of them and returns
// the report. When ctx ends, no more calls are placed, calls in progress are
// abandoned (hung up within a short budget) and Run returns the report of
// what was attempted together with ctx's error. Every goroutine Run starts
// has ended when it returns.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg = cfg.withDefaults()
	if cfg.Calls < 1 {
		return nil, errors.New("callgen: Calls must be at least 1")
	}
	u, err := NewUAC(cfg)
	if err != nil {
		return nil, err
	}
	defer u.Close()

	var tick <-chan time.Time
	if cfg.Rate > 0 {
		interval := max(time.Duration(float64(time.Second)/cfg.Rate), time.Microsecond)
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	results := make([]CallResult, cfg.Calls)
	slots := make(chan struct{}, cfg.Concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	attempted := 0
place:
	for i := range cfg.Calls {
		if i > 0 && tick != nil {
			select {
			case <-tick:
			case <-ctx.Done():
				break place
			}
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			break place
		}
		attempted++
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			results[i] = u.Call(ctx)
		}()
	}
	wg.Wait()
	rep := summarize(results[:attempted], time.Since(start))
	if cfg.RTP {
		rep.RTP = summarizeRTP(rep.Results)
	}
	return rep, ctx.Err()
}

func summarize(results []CallResult, elapsed time.Duration) *Report {
	rep := &Report{Results: results, Attempted: len(results), Duration: elapsed}
	setups := make([]time.Duration, 0, len(results))
	for _, r := range results {
		if r.OK() {
			rep.Succeeded++
		} else {
			rep.Failed++
		}
		if r.SetupTime > 0 {
			setups = append(setups, r.SetupTime)
		}
	}
	slices.Sort(setups)
	rep.SetupP50 = percentile(setups, 50)
	rep.SetupP99 = percentile(setups, 99)
	return rep
}

func summarizeRTP(results []CallResult) *RTPReport {
	rep := &RTPReport{}
	var losses []float64
	var jitters []time.Duration
	for _, r := range results {
		if !r.RTP {
			continue
		}
		rep.Calls++
		rep.Sent += r.RTPSent
		rep.Received += r.RTPReceived
		rep.Lost += r.RTPLost
		rep.Echoed += r.RTPEchoed
		if r.RTPLoss > 0 {
			rep.WithLoss++
		}
		if r.RTPStopped {
			rep.Stopped++
		}
		if r.RTPReceived == 0 {
			rep.NoMedia++
			continue
		}
		losses = append(losses, r.RTPLoss)
		jitters = append(jitters, r.RTPJitter)
	}
	slices.Sort(losses)
	slices.Sort(jitters)
	rep.LossP50, rep.LossP99 = percentile(losses, 50), percentile(losses, 99)
	rep.JitterP50, rep.JitterP99 = percentile(jitters, 50), percentile(jitters, 99)
	if n := len(losses); n > 0 {
		rep.LossMax, rep.JitterMax = losses[n-1], jitters[n-1]
	}
	return rep
}

// percentile is the nearest-rank percentile of sorted values.
func percentile[T any](sorted []T, p int) T {
	var zero T
	if len(sorted) == 0 {
		return zero
	}
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 * n)
	return sorted[min(max(rank, 1), len(sorted))-1]
}
