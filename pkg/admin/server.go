package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/sipbalancer/sipbalancer/pkg/dispatcher"
	"github.com/sipbalancer/sipbalancer/pkg/health"
	"github.com/sipbalancer/sipbalancer/pkg/session"
)

// Config configures the admin server.
type Config struct {
	// Listen is the host:port served (admin.listen).
	Listen string
	// Token is the bearer token mutating requests must carry (admin.token);
	// empty: see the package documentation.
	Token string
}

// Balancer is what the API reads and acts on; *app.App implements it.
type Balancer interface {
	Registry() *prometheus.Registry
	Dispatcher() *dispatcher.Dispatcher
	Checker() *health.Checker
	Store() session.Store
	// Redis is the Redis store, or nil with the memory store.
	Redis() *session.Redis
	Listeners() []string
	Draining() bool
}

// ReloadFunc re-reads the configuration the process was started with and
// applies what can change at run time. It returns the keys applied and the
// keys that changed but need a restart. An error means the new
// configuration was rejected and the running one is kept; errors.Join'ed
// errors (one per problem, as config.Load returns them) are reported one by
// one.
type ReloadFunc func() (applied, needRestart []string, err error)

// Deps are the server's collaborators.
type Deps struct {
	App Balancer
	// Reload is shared with SIGHUP; nil makes /api/v1/reload answer 501.
	Reload ReloadFunc
	// Level is the logger's runtime level; nil makes /api/v1/log/level
	// answer 501.
	Level *zap.AtomicLevel
	// Logger receives the server's own logs (default: none).
	Logger *zap.Logger
}

// Timeouts of the HTTP server: a slow or stuck client cannot hold a
// connection or a goroutine for long.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 64 << 10
	maxBodyBytes      = 64 << 10
	// storeTimeout bounds an affinity store read for /api/v1/calls.
	storeTimeout = 2 * time.Second
)

// Server is the admin HTTP server.
type Server struct {
	cfg      Config
	app      Balancer
	reload   ReloadFunc
	level    *zap.AtomicLevel
	log      *zap.Logger
	token    [sha256.Size]byte // sha256 of cfg.Token, for a constant-time compare
	loopback bool              // the listen address is loopback
	handler  http.Handler

	ln      net.Listener
	srv     *http.Server
	served  chan struct{}
	stopped atomic.Bool
}

// New returns a server for cfg; Start binds it. Handler works without Start
// (tests serve it with httptest).
func New(cfg Config, deps Deps) (*Server, error) {
	if deps.App == nil {
		return nil, errors.New("admin: no balancer")
	}
	log := deps.Logger
	if log == nil {
		log = zap.NewNop()
	}
	s := &Server{
		cfg:      cfg,
		app:      deps.App,
		reload:   deps.Reload,
		level:    deps.Level,
		log:      log.Named("admin"),
		token:    sha256.Sum256([]byte(cfg.Token)),
		loopback: isLoopback(cfg.Listen),
	}
	s.handler = s.routes()
	return s, nil
}

// isLoopback reports whether a listen address only accepts local
// connections: a loopback IP or "localhost". An empty host (all interfaces)
// or any other name is not.
func isLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// Handler serves the API.
func (s *Server) Handler() http.Handler { return s.handler }

// Start binds cfg.Listen and serves it in the background until Shutdown.
func (s *Server) Start() error {
	if s.cfg.Listen == "" {
		return errors.New("admin: no listen address")
	}
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("admin.listen: %w", err)
	}
	if a, ok := ln.Addr().(*net.TCPAddr); ok {
		// What was bound decides, not how it was written.
		s.loopback = a.IP.IsLoopback()
	}
	s.ln = ln
	s.srv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          zap.NewStdLog(s.log.WithOptions(zap.IncreaseLevel(zap.WarnLevel))),
	}
	s.served = make(chan struct{})
	go func() {
		defer close(s.served)
		defer func() {
			if r := recover(); r != nil {
				s.log.Error("panic in admin server", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			}
		}()
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin server stopped", zap.Error(err))
		}
	}()
	if s.cfg.Token == "" && !s.loopback {
		s.log.Warn("admin.token is empty: mutating admin endpoints are refused on a non-loopback address; set SIPBALANCER_ADMIN_TOKEN",
			zap.String("listen", s.Addr()))
	}
	s.log.Info("admin API listening", zap.String("listen", s.Addr()), zap.Bool("token", s.cfg.Token != ""))
	return nil
}

// Addr is the bound address (after Start), else the configured one.
func (s *Server) Addr() string {
	if s.ln != nil {
		return s.ln.Addr().String()
	}
	return s.cfg.Listen
}

// Shutdown stops accepting requests and waits for those in progress, until
// ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.srv == nil || s.stopped.Swap(true) {
		return nil
	}
	err := s.srv.Shutdown(ctx)
	select {
	case <-s.served:
	case <-ctx.Done():
	}
	return err
}

// endpoint is one method of one path.
type endpoint struct {
	method string
	h      http.HandlerFunc
}

// routes builds the handler. Each path is registered once without a method
// so that a wrong method gets a JSON 405 with Allow, not the mux's text.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	s.handle(mux, "/metrics", endpoint{http.MethodGet, s.metricsHandler()})
	s.handle(mux, "/healthz", endpoint{http.MethodGet, s.healthz})
	s.handle(mux, "/readyz", endpoint{http.MethodGet, s.readyz})
	s.handle(mux, "/api/v1/nodes", endpoint{http.MethodGet, s.listNodes})
	s.handle(mux, "/api/v1/nodes/{id}", endpoint{http.MethodGet, s.getNode})
	s.handle(mux, "/api/v1/nodes/{id}/{action}", endpoint{http.MethodPost, s.setOperator})
	s.handle(mux, "/api/v1/reload", endpoint{http.MethodPost, s.reloadConfig})
	s.handle(mux, "/api/v1/log/level", endpoint{http.MethodGet, s.getLevel}, endpoint{http.MethodPut, s.putLevel})
	// Profiling (go tool pprof http://ADMIN/debug/pprof/profile): it costs
	// CPU while it runs, so it is guarded like a mutating endpoint.
	mux.Handle("/debug/pprof/", s.guarded(http.HandlerFunc(pprof.Index)))
	mux.Handle("/debug/pprof/cmdline", s.guarded(http.HandlerFunc(pprof.Cmdline)))
	mux.Handle("/debug/pprof/profile", s.guarded(http.HandlerFunc(pprof.Profile)))
	mux.Handle("/debug/pprof/symbol", s.guarded(http.HandlerFunc(pprof.Symbol)))
	mux.Handle("/debug/pprof/trace", s.guarded(http.HandlerFunc(pprof.Trace)))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path)
	})
	calls := s.methods(endpoint{http.MethodGet, s.getCall})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A Call-ID may hold any character, "/" and "//" included, which
		// the mux would clean or split: the Call-ID is the rest of the
		// escaped path, unescaped once.
		if rest, ok := strings.CutPrefix(r.URL.EscapedPath(), callsPrefix); ok {
			r.SetPathValue("callid", rest)
			calls.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func (s *Server) handle(mux *http.ServeMux, pattern string, eps ...endpoint) {
	mux.Handle(pattern, s.methods(eps...))
}

// methods dispatches on the method; POST and PUT are authorized first.
func (s *Server) methods(eps ...endpoint) http.Handler {
	allow := make([]string, 0, len(eps)+1)
	for _, e := range eps {
		allow = append(allow, e.method)
		if e.method == http.MethodGet {
			allow = append(allow, http.MethodHead)
		}
	}
	allowed := strings.Join(allow, ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		method := r.Method
		if method == http.MethodHead {
			method = http.MethodGet
		}
		for _, e := range eps {
			if e.method != method {
				continue
			}
			if method != http.MethodGet && !s.authorize(w, r) {
				return
			}
			e.h(w, r)
			return
		}
		w.Header().Set("Allow", allowed)
		writeError(w, http.StatusMethodNotAllowed, "method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, allowed)
	})
}

// guarded serves h only to requests authorize accepts (token, or loopback
// without a token).
func (s *Server) guarded(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.authorize(w, r) {
			h.ServeHTTP(w, r)
		}
	})
}

// authorize checks a mutating request's bearer token; on refusal it has
// answered.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) bool {
	if s.cfg.Token == "" {
		if s.loopback {
			return true
		}
		s.refused(r, "no admin.token configured")
		writeError(w, http.StatusForbidden,
			"mutating endpoints are disabled: the admin API listens on a non-loopback address and no token is configured; set admin.token (or SIPBALANCER_ADMIN_TOKEN) and restart")
		return false
	}
	scheme, cred, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || cred == "" {
		s.refused(r, "no bearer token")
		w.Header().Set("WWW-Authenticate", `Bearer realm="sipbalancer admin"`)
		writeError(w, http.StatusUnauthorized, "this endpoint needs the header Authorization: Bearer <admin.token>")
		return false
	}
	// Hashing first makes the compare constant-time in the length too.
	got := sha256.Sum256([]byte(strings.TrimSpace(cred)))
	if subtle.ConstantTimeCompare(got[:], s.token[:]) != 1 {
		s.refused(r, "wrong bearer token")
		w.Header().Set("WWW-Authenticate", `Bearer realm="sipbalancer admin", error="invalid_token"`)
		writeError(w, http.StatusUnauthorized, "invalid bearer token")
		return false
	}
	return true
}

func (s *Server) refused(r *http.Request, why string) {
	s.log.Warn("admin request refused", zap.String("reason", why),
		zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.String("remote", r.RemoteAddr))
}

func (s *Server) metricsHandler() http.HandlerFunc {
	h := promhttp.HandlerFor(s.app.Registry(), promhttp.HandlerOpts{
		ErrorLog:      zap.NewStdLog(s.log.WithOptions(zap.IncreaseLevel(zap.WarnLevel))),
		ErrorHandling: promhttp.ContinueOnError,
		// Scrapes are cheap, but several Prometheus servers and a stuck
		// one must not pile up.
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
	return h.ServeHTTP
}

// errorBody is every error's shape.
type errorBody struct {
	Error string `json:"error"`
	// Errors lists each problem when there are several (a rejected
	// configuration).
	Errors []string `json:"errors,omitempty"`
}

func writeError(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, errorBody{Error: fmt.Sprintf(format, args...)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// readJSON decodes a small JSON request body into v, refusing unknown
// fields; on error it has answered 400.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "request body: %v", err)
		return false
	}
	return true
}
