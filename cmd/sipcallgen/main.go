// Command sipcallgen places SIP calls through a proxy (sipbalancer) and
// reports how they went. It is a thin wrapper around pkg/callgen.
//
//	sipcallgen -target 127.0.0.1:5060 -calls 1000 -rate 100 -hold 1s
//	sipcallgen -target 127.0.0.1:5060 -calls 100 -rtp -hold 200ms   # with media
//
// With -rtp each call sends RTP (20 ms G.711, -codec) from the answer until
// it hangs up and counts what the far end sends; the summary then has the
// media figures: packets, loss per call, jitter, calls that got no media
// and calls whose media stopped before they ended.
//
// Exit status: 0 when every call succeeded, 1 when any failed (or the run
// was interrupted), 2 on bad usage.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sipbalancer/sipbalancer/pkg/callgen"
)

// headerFlags collects repeated -H "Name: value" flags.
type headerFlags []sip.Header

func (h *headerFlags) String() string { return "" }

func (h *headerFlags) Set(v string) error {
	name, value, ok := strings.Cut(v, ":")
	name, value = strings.TrimSpace(name), strings.TrimSpace(value)
	if !ok || name == "" {
		return fmt.Errorf("want \"Name: value\", got %q", v)
	}
	*h = append(*h, sip.NewHeader(name, value))
	return nil
}

// summary is the -json output.
type summary struct {
	Target      string  `json:"target"`
	Transport   string  `json:"transport"`
	Attempted   int     `json:"attempted"`
	Succeeded   int     `json:"succeeded"`
	Failed      int     `json:"failed"`
	SetupP50Ms  float64 `json:"setup_p50_ms"`
	SetupP99Ms  float64 `json:"setup_p99_ms"`
	ElapsedS    float64 `json:"elapsed_s"`
	CallsPerSec float64 `json:"calls_per_second"`
	// SetupFailed counts calls whose INVITE got no 2xx: new calls lost.
	// Cut counts calls answered that then failed (re-INVITE or BYE
	// unanswered or refused): calls in progress on a node that died.
	SetupFailed int            `json:"setup_failed"`
	Cut         int            `json:"cut"`
	RTP         *rtpSummary    `json:"rtp,omitempty"`
	Errors      map[string]int `json:"errors,omitempty"` // first error of failed calls → count
	Interrupted string         `json:"interrupted,omitempty"`
}

// rtpSummary is the -json media summary (with -rtp): loss as a percentage
// per call, jitter in milliseconds.
type rtpSummary struct {
	Calls         int     `json:"calls"`
	Sent          int64   `json:"sent"`
	Received      int64   `json:"received"`
	Lost          int64   `json:"lost"`
	Echoed        int64   `json:"echoed"`
	WithLoss      int     `json:"calls_with_loss"`
	NoMedia       int     `json:"calls_without_media"`
	Stopped       int     `json:"calls_media_stopped"`
	LossP50Pct    float64 `json:"loss_p50_pct"`
	LossP99Pct    float64 `json:"loss_p99_pct"`
	LossMaxPct    float64 `json:"loss_max_pct"`
	JitterP50Ms   float64 `json:"jitter_p50_ms"`
	JitterP99Ms   float64 `json:"jitter_p99_ms"`
	JitterMaxMs   float64 `json:"jitter_max_ms"`
	StoppedOnCut  int     `json:"stopped_on_cut_calls"`
	StoppedOnGood int     `json:"stopped_on_completed_calls"`
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// setSipgoLogger sets sipgo's logger, which is process-wide. The tests run
// sipgo servers of their own in the same process, whose goroutines read it
// at any time, so they leave it alone.
var setSipgoLogger = sip.SetDefaultLogger

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sipcallgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := callgen.NewConfig("")
	var (
		target      = fs.String("target", "", "proxy address host[:port] (required)")
		transport   = fs.String("transport", def.Transport, "udp or tcp")
		calls       = fs.Int("calls", 1, "number of calls to place")
		rate        = fs.Float64("rate", 10, "new calls per second (0: as fast as -concurrency allows)")
		concurrency = fs.Int("concurrency", def.Concurrency, "max calls in progress")
		hold        = fs.Duration("hold", 0, "time between ACK and re-INVITE, and between re-INVITE and BYE")
		reinvite    = fs.Bool("reinvite", true, "send a re-INVITE inside each call")
		timeout     = fs.Duration("timeout", def.Timeout, "max wait for any transaction's final response")
		local       = fs.String("local", def.LocalAddr, "local ip:port to listen on (UDP and TCP)")
		ruri        = fs.String("ruri", "", "Request-URI (default sip:1000@<target host>)")
		asJSON      = fs.Bool("json", false, "print the summary as JSON on stdout (human summary goes to stderr)")
		verbose     = fs.Bool("v", false, "log SIP stack details to stderr")
		withRTP     = fs.Bool("rtp", false, "send and receive RTP in each call (each hold lasts at least 100 ms)")
		codec       = fs.String("codec", callgen.DefaultCodec, "RTP codec with -rtp: PCMU or PCMA")
		headers     headerFlags
	)
	fs.Var(&headers, "H", "extra INVITE header \"Name: value\" (repeatable)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *target == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "sipcallgen: -target is required and no positional arguments are taken")
		fs.Usage()
		return 2
	}

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if !*verbose {
		// sipgo's package logger reports connection bookkeeping at warn on
		// shutdown; only errors are worth showing by default.
		setSipgoLogger(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	} else {
		setSipgoLogger(logger)
	}

	cfg := callgen.Config{
		Target:      *target,
		Transport:   *transport,
		LocalAddr:   *local,
		Calls:       *calls,
		Rate:        *rate,
		Concurrency: *concurrency,
		Hold:        *hold,
		ReInvite:    *reinvite,
		Timeout:     *timeout,
		RequestURI:  *ruri,
		Headers:     headers,
		Logger:      logger,
		RTP:         *withRTP,
		Codec:       *codec,
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := callgen.Run(ctx, cfg)
	if rep == nil {
		fmt.Fprintln(stderr, "sipcallgen:", err)
		return 2
	}

	sum := summarize(cfg, rep)
	if err != nil {
		sum.Interrupted = err.Error()
	}
	human := stdout
	if *asJSON {
		human = stderr
	}
	printHuman(human, sum, rep)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		if err := enc.Encode(sum); err != nil {
			fmt.Fprintln(stderr, "sipcallgen:", err)
			return 1
		}
	}
	if err != nil || rep.Failed > 0 {
		return 1
	}
	return 0
}

func summarize(cfg callgen.Config, rep *callgen.Report) summary {
	s := summary{
		Target:     cfg.Target,
		Transport:  strings.ToLower(cfg.Transport),
		Attempted:  rep.Attempted,
		Succeeded:  rep.Succeeded,
		Failed:     rep.Failed,
		SetupP50Ms: ms(rep.SetupP50),
		SetupP99Ms: ms(rep.SetupP99),
		ElapsedS:   rep.Duration.Seconds(),
	}
	if s.Transport == "" {
		s.Transport = callgen.DefaultTransport
	}
	if rep.Duration > 0 {
		s.CallsPerSec = float64(rep.Attempted) / rep.Duration.Seconds()
	}
	for _, r := range rep.Results {
		if r.OK() {
			continue
		}
		if r.SetupStatus >= 200 && r.SetupStatus < 300 {
			s.Cut++
		} else {
			s.SetupFailed++
		}
		if s.Errors == nil {
			s.Errors = make(map[string]int)
		}
		msg := r.Err
		if msg == "" {
			msg = fmt.Sprintf("setup %d, re-INVITE %d, BYE %d", r.SetupStatus, r.ReInviteStatus, r.ByeStatus)
		}
		s.Errors[msg]++
	}
	if m := rep.RTP; m != nil {
		s.RTP = &rtpSummary{
			Calls: m.Calls, Sent: m.Sent, Received: m.Received, Lost: m.Lost, Echoed: m.Echoed,
			WithLoss: m.WithLoss, NoMedia: m.NoMedia, Stopped: m.Stopped,
			LossP50Pct: 100 * m.LossP50, LossP99Pct: 100 * m.LossP99, LossMaxPct: 100 * m.LossMax,
			JitterP50Ms: ms(m.JitterP50), JitterP99Ms: ms(m.JitterP99), JitterMaxMs: ms(m.JitterMax),
		}
		for _, r := range rep.Results {
			if r.RTPStopped {
				if r.OK() {
					s.RTP.StoppedOnGood++
				} else {
					s.RTP.StoppedOnCut++
				}
			}
		}
	}
	return s
}

func printHuman(w io.Writer, s summary, rep *callgen.Report) {
	fmt.Fprintf(w, "calls      attempted %d, succeeded %d, failed %d (no answer %d, cut after the answer %d)\n",
		s.Attempted, s.Succeeded, s.Failed, s.SetupFailed, s.Cut)
	fmt.Fprintf(w, "setup      p50 %v, p99 %v\n", round(rep.SetupP50), round(rep.SetupP99))
	fmt.Fprintf(w, "elapsed    %v (%.1f calls/s)\n", rep.Duration.Round(time.Millisecond), s.CallsPerSec)
	if m := s.RTP; m != nil {
		fmt.Fprintf(w, "rtp        %d calls with media: sent %d, received %d, lost %d", m.Calls, m.Sent, m.Received, m.Lost)
		if m.Echoed > 0 {
			fmt.Fprintf(w, ", echoed %d", m.Echoed)
		}
		fmt.Fprintln(w)
		fmt.Fprintf(w, "rtp loss   per call p50 %.2f %%, p99 %.2f %%, max %.2f %%; calls with loss %d, without media %d, media stopped in mid-call %d\n",
			m.LossP50Pct, m.LossP99Pct, m.LossMaxPct, m.WithLoss, m.NoMedia, m.Stopped)
		fmt.Fprintf(w, "jitter     per call p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", m.JitterP50Ms, m.JitterP99Ms, m.JitterMaxMs)
	}
	if s.Interrupted != "" {
		fmt.Fprintf(w, "stopped    %s\n", s.Interrupted)
	}
	if len(s.Errors) > 0 {
		msgs := make([]string, 0, len(s.Errors))
		for m := range s.Errors {
			msgs = append(msgs, m)
		}
		sort.Slice(msgs, func(i, j int) bool { return s.Errors[msgs[i]] > s.Errors[msgs[j]] })
		fmt.Fprintln(w, "failures:")
		for i, m := range msgs {
			if i == 10 {
				fmt.Fprintf(w, "  ... %d more kinds\n", len(msgs)-10)
				break
			}
			fmt.Fprintf(w, "  %6d  %s\n", s.Errors[m], m)
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}
