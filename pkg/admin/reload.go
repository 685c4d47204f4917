package admin

import (
	"net/http"
	"strings"

	"go.uber.org/zap"
)

// reloadResult is the answer to a successful reload.
type reloadResult struct {
	// Applied lists the keys now in force (nodes, dispatcher.policy,
	// log.level).
	Applied []string `json:"applied"`
	// NeedsRestart lists keys that changed in the file but take effect
	// only at the next start (sip.listen, admin.listen, ...).
	NeedsRestart []string `json:"needs_restart"`
}

// reloadConfig re-reads the configuration file, exactly as SIGHUP does. A
// file that does not load or validate is refused with 400 and every problem
// listed; the running configuration stays.
func (s *Server) reloadConfig(w http.ResponseWriter, r *http.Request) {
	if s.reload == nil {
		writeError(w, http.StatusNotImplemented, "reload is not available in this process")
		return
	}
	// The reload function logs the outcome, as for SIGHUP.
	s.log.Info("reload requested", zap.String("remote", r.RemoteAddr))
	applied, restart, err := s.reload()
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{
			Error:  "configuration rejected; the running configuration is kept",
			Errors: problems(err),
		})
		return
	}
	if applied == nil {
		applied = []string{}
	}
	if restart == nil {
		restart = []string{}
	}
	writeJSON(w, http.StatusOK, reloadResult{Applied: applied, NeedsRestart: restart})
}

// problems splits an error into its lines: config.Load joins one error per
// problem.
func problems(err error) []string {
	var out []string
	for line := range strings.SplitSeq(err.Error(), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}
