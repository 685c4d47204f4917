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

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 * n)
	return sorted[min(max(rank, 1), len(sorted))-1]
}
