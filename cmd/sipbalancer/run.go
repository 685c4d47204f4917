package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/sipbalancer/sipbalancer/internal/app"
	"github.com/sipbalancer/sipbalancer/pkg/admin"
	"github.com/sipbalancer/sipbalancer/pkg/config"
	"github.com/sipbalancer/sipbalancer/pkg/logging"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// setSipgoLogger sets sipgo's logger, which is process-wide. The tests run
// the balancer more than once in one process, with sipgo goroutines of
// earlier runs still reading it, so they leave it alone.
var setSipgoLogger = sip.SetDefaultLogger

// run is main without the process: it returns the exit status.
func run(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("sipbalancer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "path to the YAML configuration file (required)")
	check := fs.Bool("check", false, "validate the configuration and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stderr, "sipbalancer", version)
		return 0
	}
	if *path == "" {
		fmt.Fprintln(stderr, "sipbalancer: -config FILE is required")
		fs.Usage()
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "sipbalancer: invalid configuration %s:\n%v\n", *path, err)
		return 1
	}
	if *check {
		fmt.Fprintf(stderr, "sipbalancer: %s is valid\n", *path)
		return 0
	}
	log, level, err := logging.New(cfg.Log.Level, cfg.Log.Format, cfg.Log.Sampling, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "sipbalancer: %v\n", err)
		return 1
	}
	defer log.Sync() //nolint:errcheck
	setSipgoLogger(logging.Slog(log))
	tuneGC(log)

	app.Version = version
	a, err := app.New(cfg, log)
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		return 1
	}
	a.UseLogLevel(level)
	if err := a.Start(); err != nil {
		log.Error("cannot start", zap.Error(err))
		a.Close()
		return 1
	}
	// SIGHUP and POST /api/v1/reload share one function. SIGHUP is caught
	// from here on (before the admin API answers).
	reload := reloader(a, *path, log)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	var adm *admin.Server
	if cfg.Admin.Listen != "" {
		adm, err = admin.New(admin.Config{Listen: cfg.Admin.Listen, Token: cfg.Admin.Token},
			admin.Deps{App: a, Reload: reload, Level: &level, Logger: log})
		if err == nil {
			err = adm.Start()
		}
		if err != nil {
			log.Error("cannot start the admin API", zap.Error(err))
			a.Close()
			return 1
		}
	}

	for {
		select {
		case <-hup:
			reload() //nolint:errcheck // it logs its outcome
			continue
		case <-ctx.Done():
		}
		break
	}

	// The admin API keeps serving while the instance drains: /readyz
	// answers 503 and /metrics shows the drain.
	log.Info("shutting down", zap.Duration("timeout", cfg.SIP.ShutdownTimeout))
	sctx, cancel := context.WithTimeout(context.Background(), cfg.SIP.ShutdownTimeout)
	defer cancel()
	if err := a.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		log.Warn("shutdown", zap.Error(err))
	}
	if adm != nil {
		actx, acancel := context.WithTimeout(context.Background(), adminStopTimeout)
		defer acancel()
		if err := adm.Shutdown(actx); err != nil {
			log.Warn("admin API shutdown", zap.Error(err))
		}
	}
	log.Info("stopped")
	return 0
}

// adminStopTimeout bounds the wait for admin requests in progress at exit.
const adminStopTimeout = 5 * time.Second

// reloader returns the reload shared by SIGHUP and the admin API: it
// re-reads the configuration file the process was started with and applies
// what can change at run time. An invalid file is rejected with its errors
// and the running configuration stays in force.
func reloader(a *app.App, path string, log *zap.Logger) admin.ReloadFunc {
	return func() (applied, needRestart []string, err error) {
		cfg, err := config.Load(path)
		if err != nil {
			log.Error("reload rejected: configuration invalid, keeping the running one", zap.Error(err))
			return nil, nil, err
		}
		applied, needRestart, err = a.Reload(cfg)
		if err != nil {
			log.Error("reload rejected, keeping the running configuration", zap.Error(err))
			return nil, nil, err
		}
		log.Info("configuration reloaded", zap.Strings("applied", applied))
		if len(needRestart) > 0 {
			log.Warn("changed settings need a restart to take effect", zap.Strings("keys", needRestart))
		}
		return applied, needRestart, nil
	}
}

// defaultGCPercent is the garbage collector's target when GOGC is not set.
// Forwarding SIP allocates a lot of short-lived memory (sipgo parses every
// message into headers, about 45 KB per call) over a small live heap, so
// Go's default of 100 collects very often and marks the same live heap
// each time. Measured under sipp load (benchmarks/RESULTS.md, "Garbage
// collector"), 400 costs less CPU per call than 200 and 100 and carries a
// higher rate. The heap may grow to five times the live data; the memory
// limit below keeps that within the machine.
const defaultGCPercent = 400

// memoryLimitShare is the part of the machine's (or the cgroup's) memory
// the Go heap is held to when GOMEMLIMIT is not set: near it the collector
// works harder instead of growing the heap further.
const memoryLimitShare = 0.5

// tuneGC applies the defaults above; GOGC and GOMEMLIMIT in the
// environment win.
func tuneGC(log *zap.Logger) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
		log.Debug("garbage collector target set", zap.Int("gogc", defaultGCPercent))
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		if total, ok := availableMemory("/sys/fs/cgroup/memory.max", "/proc/meminfo"); ok {
			limit := int64(float64(total) * memoryLimitShare)
			debug.SetMemoryLimit(limit)
			log.Debug("heap memory limit set", zap.Int64("bytes", limit))
		}
	}
}

// availableMemory is the cgroup v2 memory limit when one is set, else the
// machine's MemTotal, in bytes.
func availableMemory(cgroupMax, meminfo string) (uint64, bool) {
	if b, err := os.ReadFile(cgroupMax); err == nil {
		if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && v > 0 {
			return v, true
		}
		// "max": no limit.
	}
	b, err := os.ReadFile(meminfo)
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(b)) {
		rest, ok := strings.CutPrefix(line, "MemTotal:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, false
		}
		kb, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil || kb == 0 {
			return 0, false
		}
		return kb * 1024, true
	}
	return 0, false
}
