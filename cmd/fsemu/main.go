// Command fsemu runs one emulated FreeSWITCH node (see package
// pkg/fsemu) for demos and benchmarks.
//
// It prints the bound SIP address (UDP and TCP, same port) as the first line
// on stdout, serves until SIGINT or SIGTERM, then prints the node's final
// counters as one JSON line on stdout. Logs go to stderr. With -esl it also
// serves FreeSWITCH's Event Socket (its bound address is logged and shown by
// GET /state), and with -control a small HTTP API (see control.go).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sipbalancer/sipbalancer/pkg/fsemu"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// configureSipgo sets sipgo's process-wide logger and UDP message size. The
// tests run emulators side by side in one process, whose goroutines read
// both at any time, so they leave them alone.
var configureSipgo = func(l *slog.Logger) {
	sip.SetDefaultLogger(l)
	sip.UDPMTUSize = 65535
}

// run is main without the process: it serves until ctx is done.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	stderr = &lockedWriter{w: stderr} // shared by two log handlers
	fs := flag.NewFlagSet("fsemu", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg fsemu.Config
	fs.StringVar(&cfg.ID, "id", "fsemu", "node id, used in logs")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:5080", "SIP address, served over UDP and TCP on the same port (port 0: any free one)")
	fs.StringVar(&cfg.Advertise, "advertise", "", "host for Contact, Via and SDP (default: the listen host)")
	fs.DurationVar(&cfg.AnswerDelay, "answer-delay", 0, "time between 180 Ringing and 200 OK")
	fs.DurationVar(&cfg.RingDelay, "ring-delay", 0, "time between the INVITE and 180 Ringing")
	fs.DurationVar(&cfg.HoldTime, "hold", 0, "hang up (BYE) this long after the ACK; 0: wait for the caller's BYE")
	fs.IntVar(&cfg.MaxSessions, "max-sessions", 0, "calls in progress before INVITEs get 503 Maximum Calls In Progress; 0: unlimited")
	fs.Float64Var(&cfg.Fail503Ratio, "fail503", 0, "fraction of INVITEs answered 503 (fault injection)")
	fs.Float64Var(&cfg.DropRatio, "drop", 0, "fraction of INVITEs never answered (fault injection)")
	fs.BoolVar(&cfg.OptionsAlways200, "options-always-200", false, "keep OPTIONS at 200 while paused or full (FreeSWITCH >= 1.11.1 default); false answers 503 like 1.11.0")
	fs.Int64Var(&cfg.Seed, "seed", 0, "seed of the fault-injection random source; 0: random")
	fs.IntVar(&cfg.MaxRecords, "max-records", fsemu.DefaultMaxRecords, "call records kept for /calls (oldest dropped first)")
	fs.StringVar(&cfg.ESLAddr, "esl", "", "Event Socket (ESL, inbound) address such as 127.0.0.1:8021 (empty: off; port 0: any free one)")
	fs.StringVar(&cfg.ESLPassword, "esl-password", fsemu.DefaultESLPassword, "Event Socket password")
	fs.DurationVar(&cfg.HeartbeatInterval, "heartbeat", 20*time.Second, "HEARTBEAT event interval")
	fs.StringVar(&cfg.EchoUser, "echo-user", "echo", "Request-URI user of the echo extension: its calls get their RTP sent back")
	echo := fs.Bool("echo", true, "echo RTP on calls to -echo-user; false: answer them but send nothing back (dead media; POST /echo changes it)")
	fs.BoolVar(&cfg.RTP, "rtp", false, "give every answered call media: an RTP socket and a 400 Hz tone to the caller every 20 ms until the call ends")
	idleCPU := fs.Float64("idle-cpu", 95, "Idle-CPU percentage reported over the Event Socket, within [0, 100]")
	control := fs.String("control", "", "HTTP control address such as 127.0.0.1:8090 (empty: off)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "fsemu: unexpected arguments %q\n", fs.Args())
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "fsemu: -log-level: %v\n", err)
		return 2
	}
	if *idleCPU < 0 || *idleCPU > 100 {
		fmt.Fprintf(stderr, "fsemu: -idle-cpu %v: want a percentage within [0, 100]\n", *idleCPU)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg.Logger = logger
	cfg.EchoDisabled = !*echo

	// This process is ours: route sipgo's package-wide logging to stderr
	// (only its errors, unless debugging: it warns about connection
	// bookkeeping on shutdown), and let
	// large UDP messages (long Via and Record-Route sets behind proxies)
	// through, as sofia-sip does.
	sipgoLevel := max(level, slog.LevelError)
	if level <= slog.LevelDebug {
		sipgoLevel = level
	}
	configureSipgo(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: sipgoLevel})).With("component", "sipgo"))

	n, err := fsemu.Start(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "fsemu: %v\n", err)
		return 1
	}
	defer n.Close()
	n.SetIdleCPU(*idleCPU) // Config.IdleCPU takes 0 for its default
	fmt.Fprintln(stdout, n.Addr())

	var srv *http.Server
	if *control != "" {
		l, err := net.Listen("tcp", *control)
		if err != nil {
			fmt.Fprintf(stderr, "fsemu: -control: %v\n", err)
			return 1
		}
		srv = &http.Server{Handler: newControlHandler(n), ReadHeaderTimeout: 5 * time.Second}
		logger.Info("control API listening", "addr", l.Addr().String())
		go func() {
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error("control API stopped", "error", err)
			}
		}()
	}

	<-ctx.Done()
	if srv != nil {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = srv.Shutdown(shutdownCtx)
		cancel()
	}
	if err := n.Close(); err != nil {
		logger.Warn("closing node", "error", err)
	}
	if err := json.NewEncoder(stdout).Encode(n.Stats()); err != nil {
		return 1
	}
	return 0
}

// lockedWriter serialises writes from several log handlers.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
