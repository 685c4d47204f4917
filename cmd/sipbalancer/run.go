package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/sipbalancer/sipbalancer/internal/app"
	"github.com/sipbalancer/sipbalancer/pkg/config"
	"github.com/sipbalancer/sipbalancer/pkg/logging"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

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
	log, _, err := logging.New(cfg.Log.Level, cfg.Log.Format, cfg.Log.Sampling, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "sipbalancer: %v\n", err)
		return 1
	}
	defer log.Sync() //nolint:errcheck
	sip.SetDefaultLogger(logging.Slog(log))

	a, err := app.New(cfg, log)
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		return 1
	}
	if err := a.Start(); err != nil {
		log.Error("cannot start", zap.Error(err))
		a.Close()
		return 1
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-hup:
			reload(a, *path, log)
			continue
		case <-ctx.Done():
		}
		break
	}

	log.Info("shutting down", zap.Duration("timeout", cfg.SIP.ShutdownTimeout))
	sctx, cancel := context.WithTimeout(context.Background(), cfg.SIP.ShutdownTimeout)
	defer cancel()
	if err := a.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		log.Warn("shutdown", zap.Error(err))
	}
	log.Info("stopped")
	return 0
}

// reload re-reads the configuration file on SIGHUP. An invalid file is
// rejected with its errors and the running configuration stays in force.
func reload(a *app.App, path string, log *zap.Logger) {
	cfg, err := config.Load(path)
	if err != nil {
		log.Error("reload rejected: configuration invalid, keeping the running one", zap.Error(err))
		return
	}
	applied, restart, err := a.Reload(cfg)
	if err != nil {
		log.Error("reload failed, keeping the running configuration", zap.Error(err))
		return
	}
	log.Info("configuration reloaded", zap.Strings("applied", applied))
	if len(restart) > 0 {
		log.Warn("changed settings need a restart to take effect", zap.Strings("keys", restart))
	}
}
