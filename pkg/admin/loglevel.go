package admin

import (
	"net/http"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// levelJSON is the body of /api/v1/log/level, both ways.
type levelJSON struct {
	Level string `json:"level"`
}

func (s *Server) getLevel(w http.ResponseWriter, _ *http.Request) {
	if s.level == nil {
		writeError(w, http.StatusNotImplemented, "the log level cannot be changed in this process")
		return
	}
	writeJSON(w, http.StatusOK, levelJSON{Level: s.level.Level().String()})
}

// putLevel sets the runtime log level: debug, info, warn or error. It lasts
// until the next restart, or until a reload whose file changes log.level.
func (s *Server) putLevel(w http.ResponseWriter, r *http.Request) {
	if s.level == nil {
		writeError(w, http.StatusNotImplemented, "the log level cannot be changed in this process")
		return
	}
	var body levelJSON
	if !readJSON(w, r, &body) {
		return
	}
	var lvl zapcore.Level
	switch body.Level {
	case "debug", "info", "warn", "error":
		_ = lvl.UnmarshalText([]byte(body.Level))
	default:
		writeError(w, http.StatusBadRequest, "level: unknown level %q (want debug, info, warn or error)", body.Level)
		return
	}
	old := s.level.Level()
	logChange := func() {
		s.log.Info("log level changed", zap.Stringer("from", old), zap.Stringer("to", lvl), zap.String("remote", r.RemoteAddr))
	}
	// The line is written at whichever of the two levels shows more.
	if lvl < old {
		s.level.SetLevel(lvl)
		logChange()
	} else {
		logChange()
		s.level.SetLevel(lvl)
	}
	writeJSON(w, http.StatusOK, levelJSON{Level: lvl.String()})
}
