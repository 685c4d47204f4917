// Command sipcallgen places SIP calls through a proxy (sipbalancer) and
// reports how they went. It is a thin wrapper around pkg/callgen.
//
//	sipcallgen -target 127.0.0.1:5060 -calls 1000 -rate 100 -hold 1s
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
	Target      string         `json:"target"`
	Transport   string         `json:"transport"`
	Attempted   int            `json:"attempted"`
	Succeeded   int            `json:"succeeded"`
	Failed      int            `json:"failed"`
	SetupP50Ms  float64        `json:"setup_p50_ms"`
	SetupP99Ms  float64        `json:"setup_p99_ms"`
	ElapsedS    float64        `json:"elapsed_s"`
	CallsPerSec float64        `json:"calls_per_second"`
	Errors      map[string]int `json:"errors,omitempty"` // first error of failed calls → count
	Interrupted string         `json:"interrupted,omitempty"`
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

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
		sip.SetDefaultLogger(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	} else {
		sip.SetDefaultLogger(logger)
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
		if s.Errors == nil {
			s.Errors = make(map[string]int)
		}
		msg := r.Err
		if msg == "" {
			msg = fmt.Sprintf("setup %d, re-INVITE %d, BYE %d", r.SetupStatus, r.ReInviteStatus, r.ByeStatus)
		}
		s.Errors[msg]++
	}
	return s
}

func printHuman(w io.Writer, s summary, rep *callgen.Report) {
	fmt.Fprintf(w, "calls      attempted %d, succeeded %d, failed %d\n", s.Attempted, s.Succeeded, s.Failed)
	fmt.Fprintf(w, "setup      p50 %v, p99 %v\n", round(rep.SetupP50), round(rep.SetupP99))
	fmt.Fprintf(w, "elapsed    %v (%.1f calls/s)\n", rep.Duration.Round(time.Millisecond), s.CallsPerSec)
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
