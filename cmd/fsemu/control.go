package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/sipbalancer/sipbalancer/pkg/fsemu"
)

// state is what GET /state and the POST endpoints return: the node's
// adjustable settings.
type state struct {
	ID             string  `json:"id"`
	SIP            string  `json:"sip"`
	ESL            string  `json:"esl"`
	ProfileRunning bool    `json:"profile_running"`
	IdleCPU        float64 `json:"idle_cpu"`
	Paused         bool    `json:"paused"`
	MaxSessions    int     `json:"max_sessions"`
	Active         int     `json:"active"`
	Fail503        float64 `json:"fail503"`
	Drop           float64 `json:"drop"`
	AnswerDelay    string  `json:"answer_delay"`
	Echo           bool    `json:"echo"`
}

// newControlHandler serves the HTTP control API used by demos and chaos
// scripts:
//
//	GET  /stats                      node counters (fsemu.Stats)
//	GET  /calls[?limit=N]            call records, oldest first (the last N)
//	GET  /state                      adjustable settings
//	POST /pause, /resume             like fsctl pause / resume
//	POST /faults?fail503=F&drop=D    fault ratios; an omitted one is kept
//	POST /max-sessions?n=N           session cap (0: unlimited)
//	POST /answer-delay?d=DURATION    delay between 180 and 200
//	POST /idle-cpu?v=PERCENT         Idle-CPU reported over the Event Socket
//	POST /profile?running=BOOL       SIP profile RUNNING or DOWN (503 to new calls)
//	POST /echo?enabled=BOOL          the echo extension sends RTP back, or not (dead media)
func newControlHandler(n *fsemu.Node) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, n.Stats())
	})
	mux.HandleFunc("GET /calls", func(w http.ResponseWriter, r *http.Request) {
		calls := n.Calls()
		if s := r.URL.Query().Get("limit"); s != "" {
			limit, err := strconv.Atoi(s)
			if err != nil || limit < 0 {
				http.Error(w, "limit: want a non-negative integer", http.StatusBadRequest)
				return
			}
			if limit < len(calls) {
				calls = calls[len(calls)-limit:]
			}
		}
		writeJSON(w, calls)
	})
	mux.HandleFunc("GET /state", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, stateOf(n))
	})
	mux.HandleFunc("POST /pause", func(w http.ResponseWriter, r *http.Request) {
		n.Pause()
		writeJSON(w, stateOf(n))
	})
	mux.HandleFunc("POST /resume", func(w http.ResponseWriter, r *http.Request) {
		n.Resume()
		writeJSON(w, stateOf(n))
	})
	mux.HandleFunc("POST /faults", func(w http.ResponseWriter, r *http.Request) {
		fail503, drop := n.Faults()
		q := r.URL.Query()
		var err error
		if s := q.Get("fail503"); s != "" {
			if fail503, err = parseRatio(s); err != nil {
				http.Error(w, "fail503: "+err.Error(), http.StatusBadRequest)
				return
			}
		}
		if s := q.Get("drop"); s != "" {
			if drop, err = parseRatio(s); err != nil {
				http.Error(w, "drop: "+err.Error(), http.StatusBadRequest)
				return
			}
		}
		n.SetFaults(fail503, drop)
		writeJSON(w, stateOf(n))
	})
	mux.HandleFunc("POST /max-sessions", func(w http.ResponseWriter, r *http.Request) {
		v, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || v < 0 {
			http.Error(w, "n: want a non-negative integer", http.StatusBadRequest)
			return
		}
		n.SetMaxSessions(v)
		writeJSON(w, stateOf(n))
	})
	mux.HandleFunc("POST /answer-delay", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("d"))
		if err != nil || d < 0 {
			http.Error(w, "d: want a non-negative duration such as 1500ms", http.StatusBadRequest)
			return
		}
		n.SetAnswerDelay(d)
		writeJSON(w, stateOf(n))
	})
	mux.HandleFunc("POST /idle-cpu", func(w http.ResponseWriter, r *http.Request) {
		v, err := strconv.ParseFloat(r.URL.Query().Get("v"), 64)
		if err != nil || v < 0 || v > 100 {
			http.Error(w, "v: want a percentage within [0, 100]", http.StatusBadRequest)
			return
		}
		n.SetIdleCPU(v)
		writeJSON(w, stateOf(n))
	})
	mux.HandleFunc("POST /profile", func(w http.ResponseWriter, r *http.Request) {
		running, err := strconv.ParseBool(r.URL.Query().Get("running"))
		if err != nil {
			http.Error(w, "running: want true or false", http.StatusBadRequest)
			return
		}
		n.SetProfileRunning(running)
		writeJSON(w, stateOf(n))
	})
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		on, err := strconv.ParseBool(r.URL.Query().Get("enabled"))
		if err != nil {
			http.Error(w, "enabled: want true or false", http.StatusBadRequest)
			return
		}
		n.SetEchoEnabled(on)
		writeJSON(w, stateOf(n))
	})
	return mux
}

func stateOf(n *fsemu.Node) state {
	fail503, drop := n.Faults()
	return state{
		ID:             n.ID(),
		SIP:            n.Addr(),
		ESL:            n.ESLAddr(),
		ProfileRunning: n.ProfileRunning(),
		IdleCPU:        n.IdleCPU(),
		Paused:         n.Paused(),
		MaxSessions:    n.MaxSessions(),
		Active:         n.Active(),
		Fail503:        fail503,
		Drop:           drop,
		AnswerDelay:    n.AnswerDelay().String(),
		Echo:           n.EchoEnabled(),
	}
}

func parseRatio(s string) (float64, error) {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 || v > 1 {
		return 0, fmt.Errorf("want a number within [0, 1], got %q", s)
	}
	return v, nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
