// Package logging builds sipbalancer's zap logger from configuration and
// bridges sipgo's log/slog output into it.
//
// sipgo logs through log/slog, and some of what it logs is driven by
// untrusted input: every datagram that fails to parse is logged at Error
// with its full content. The bridge therefore only passes Warn and above,
// drops the raw packet, and is sampled, so that a flood cannot flood the
// log.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New returns a logger writing to w at level ("debug", "info", "warn",
// "error") in format ("json" or "console"), sampled or not, and the atomic
// level that changes it at run time.
func New(level, format string, sampling bool, w io.Writer) (*zap.Logger, zap.AtomicLevel, error) {
	lvl := zap.NewAtomicLevel()
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, lvl, fmt.Errorf("log.level: %w", err)
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.TimeKey = "ts"
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	switch format {
	case "", "json":
		enc = zapcore.NewJSONEncoder(encCfg)
	case "console":
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	default:
		return nil, lvl, fmt.Errorf("log.format: unknown format %q (want json or console)", format)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), lvl)
	if sampling {
		// Per message text: the first 100 each second, then 1 in 100.
		core = zapcore.NewSamplerWithOptions(core, time.Second, 100, 100)
	}
	return zap.New(core), lvl, nil
}

// Slog returns a log/slog logger that writes into l at Warn and above,
// without message bodies, for sipgo.
func Slog(l *zap.Logger) *slog.Logger {
	return slog.New(&slogHandler{l: l.Named("sipgo").WithOptions(zap.AddCallerSkip(3))})
}

type slogHandler struct {
	l     *zap.Logger
	attrs []zap.Field
	group string
}

func (h *slogHandler) Enabled(_ context.Context, lvl slog.Level) bool {
	return lvl >= slog.LevelWarn && h.l.Core().Enabled(toZap(lvl))
}

func (h *slogHandler) Handle(_ context.Context, r slog.Record) error {
	ce := h.l.Check(toZap(r.Level), r.Message)
	if ce == nil {
		return nil
	}
	fields := make([]zap.Field, 0, len(h.attrs)+r.NumAttrs())
	fields = append(fields, h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		fields = append(fields, h.field(a))
		return true
	})
	ce.Write(fields...)
	return nil
}

// field converts an attribute; raw SIP payloads are replaced by their size.
func (h *slogHandler) field(a slog.Attr) zap.Field {
	key := a.Key
	if h.group != "" {
		key = h.group + "." + key
	}
	if a.Key == "data" || a.Key == "msg" || a.Key == "req" || a.Key == "res" {
		s := a.Value.String()
		if len(s) > 120 {
			return zap.Int(key+"_bytes", len(s))
		}
		return zap.String(key, strings.ToValidUTF8(s, "?"))
	}
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return zap.String(key, v.String())
	case slog.KindInt64:
		return zap.Int64(key, v.Int64())
	case slog.KindDuration:
		return zap.Duration(key, v.Duration())
	case slog.KindBool:
		return zap.Bool(key, v.Bool())
	default:
		if err, ok := v.Any().(error); ok {
			return zap.String(key, err.Error())
		}
		return zap.String(key, v.String())
	}
}

func (h *slogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := &slogHandler{l: h.l, group: h.group, attrs: append([]zap.Field(nil), h.attrs...)}
	for _, a := range attrs {
		n.attrs = append(n.attrs, h.field(a))
	}
	return n
}

func (h *slogHandler) WithGroup(name string) slog.Handler {
	g := name
	if h.group != "" {
		g = h.group + "." + name
	}
	return &slogHandler{l: h.l, attrs: h.attrs, group: g}
}

func toZap(l slog.Level) zapcore.Level {
	switch {
	case l >= slog.LevelError:
		return zapcore.ErrorLevel
	case l >= slog.LevelWarn:
		return zapcore.WarnLevel
	case l >= slog.LevelInfo:
		return zapcore.InfoLevel
	default:
		return zapcore.DebugLevel
	}
}
