// Package web is pcd's HTTP side, a peer of package cli over the same
// engine.Client: a JSON API that mirrors the command line, an event
// stream, the dashboard, health checks and Prometheus metrics, served by
// pcd daemon --http and pcd serve. Every read and write goes through the
// Client, so it serves SQLite and PostgreSQL alike; on PostgreSQL any
// daemon serves the whole queue.
package web

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/store"
)

// Options configure the handler.
type Options struct {
	// Token, if set, is required as "Authorization: Bearer TOKEN" by
	// every request but the health checks.
	Token  string
	Logger *slog.Logger
	// Metrics, if set, is served at /metrics.
	Metrics http.Handler
	// Version is pcd's, for the status.
	Version string
	// Feed, if set, passes the event streams the callbacks of a runner
	// in this process, as it commits them.
	Feed *Feed
	// AllowHosts are host names, besides loopback's, that a request's
	// Host header may name when there is no token (see hostGuard).
	AllowHosts []string
}

// maxBody bounds a request body that is read whole (a job file).
const maxBody = 16 << 20

// Handler serves the API of c's database.
func Handler(c *engine.Client, o Options) http.Handler {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &server{c: c, o: o, hub: newHub(c, o.Logger), closing: make(chan struct{})}
	if o.Feed != nil {
		s.hub.fed = true
		o.Feed.hub.Store(s.hub)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /{$}", s.dashboard)
	mux.Handle("GET /ui/", http.FileServerFS(uiFS))
	mux.HandleFunc("GET /readyz", s.readyz)
	api := http.NewServeMux()
	for _, rt := range s.routes() {
		api.HandleFunc(rt.method+" "+rt.path, rt.h)
	}
	api.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, apiError{http.StatusNotFound, "not_found", 5, fmt.Sprintf("no such API endpoint: %s %s", r.Method, r.URL.Path)})
	})
	if o.Metrics != nil {
		api.Handle("GET /metrics", o.Metrics)
	}
	guarded := s.guard(api)
	mux.Handle("/api/", guarded)
	mux.Handle("/metrics", guarded)
	return &handler{Handler: s.hostGuard(mux), s: s}
}

// handler is the server's mux, with a way to end its event streams: an
// http.Server's Shutdown waits for idle connections, which a stream's
// never is (see Server).
type handler struct {
	http.Handler
	s *server
}

// closeStreams ends every event stream, now and from now on.
func (h *handler) closeStreams() { h.s.closeOnce.Do(func() { close(h.s.closing) }) }

type server struct {
	c   *engine.Client
	o   Options
	hub *hub
	// closing ends the event streams: the server shuts down.
	closing   chan struct{}
	closeOnce sync.Once
}

type route struct {
	method, path string
	h            http.HandlerFunc
}

// routes are the API's endpoints; openapi.json documents each
// (TestOpenAPIDocumentsEveryRoute).
func (s *server) routes() []route {
	rs := []route{
		{"GET", "/api/v1/openapi.json", s.openapi},
		{"GET", "/api/v1/status", s.status},
		{"GET", "/api/v1/throughput", s.throughput},
		{"GET", "/api/v1/jobs", s.jobs},
		{"POST", "/api/v1/jobs", s.submit},
		{"GET", "/api/v1/jobs/{job}", s.job},
		{"GET", "/api/v1/jobs/{job}/tasks", s.tasks},
		{"GET", "/api/v1/jobs/{job}/tasks/{n}", s.task},
		{"GET", "/api/v1/jobs/{job}/callbacks", s.callbacks},
		{"GET", "/api/v1/events", s.events},
	}
	for _, action := range []string{"cancel", "retry", "pause", "resume"} {
		rs = append(rs, route{"POST", "/api/v1/jobs/{job}/" + action, s.action(action)})
	}
	return rs
}

//go:embed openapi.json
var openapiJSON []byte

// uiFS is the dashboard: HTML, CSS and JavaScript, with no CDN and no
// build step.
//
//go:embed ui
var uiFS embed.FS

// dashboard serves the dashboard's page. It is static: the page asks the
// API for everything, with the token if one is set.
func (s *server) dashboard(w http.ResponseWriter, r *http.Request) {
	page, err := uiFS.ReadFile("ui/index.html")
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Referrer-Policy", "no-referrer")
	_, _ = w.Write(page)
}

func (s *server) openapi(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openapiJSON)
}

// guard checks the token, and keeps other sites from changing anything:
// a request that changes state (any method but GET and HEAD) with an
// Origin header must come from this server's own origin.
func (s *server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if s.o.Token != "" && !validToken(r, s.o.Token) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="pcd"`)
			s.fail(w, r, apiError{http.StatusUnauthorized, "unauthorized", 2, "a valid token is needed: Authorization: Bearer TOKEN"})
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if origin := r.Header.Get("Origin"); origin != "" && !sameOrigin(origin, r) {
				s.fail(w, r, apiError{http.StatusForbidden, "cross_origin", 2, "a request from another site may not change anything: Origin " + origin})
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// hostGuard refuses, when there is no token, a request whose Host header
// names anything but loopback or an allowed name. Without it, DNS
// rebinding lets any web page reach a loopback API: the page's own name
// is made to resolve to 127.0.0.1, so the browser sends the page's Host
// and Origin, which agree, and reads the answers. A token guards the API
// on its own: the page cannot know it.
func (s *server) hostGuard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.o.Token == "" && !allowedHost(r.Host, s.o.AllowHosts) {
			s.fail(w, r, apiError{http.StatusMisdirectedRequest, "misdirected", 2,
				fmt.Sprintf("Host %q is not this server's: without a token, pcd answers only requests to localhost or a loopback address (or a name given with --http-allow-host)", r.Host)})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// allowedHost says whether a Host header (name or address, with or
// without a port) names loopback or one of the allowed names.
func allowedHost(hostport string, allow []string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "" {
		return false
	}
	if host == "localhost" {
		return true
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback()
	}
	for _, a := range allow {
		if strings.EqualFold(strings.TrimSuffix(a, "."), host) {
			return true
		}
	}
	return false
}

func validToken(r *http.Request, token string) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && constantTimeEqual(strings.TrimSpace(got), token)
}

func constantTimeEqual(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	var v byte
	for i := range len(a) {
		v |= a[i] ^ b[i]
	}
	return v == 0
}

// sameOrigin says whether origin is the request's own scheme and host.
func sameOrigin(origin string, r *http.Request) bool {
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return u.Scheme == scheme && strings.EqualFold(u.Host, r.Host)
}

// apiError is an error as the API returns it: an HTTP status, a code, the
// exit code pcd would give it, and one line.
type apiError struct {
	status int
	code   string
	exit   int
	msg    string
}

// errorOf classifies err as the command line's exit codes do.
func errorOf(err error) apiError {
	msg := err.Error()
	switch {
	case errors.Is(err, engine.ErrBadJob), errors.Is(err, errBadRequest):
		return apiError{http.StatusBadRequest, "bad_request", 2, msg}
	case errors.Is(err, store.ErrNotFound):
		return apiError{http.StatusNotFound, "not_found", 5, msg}
	case errors.Is(err, store.ErrAmbiguous):
		return apiError{http.StatusConflict, "ambiguous", 6, msg}
	case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrDuplicate):
		return apiError{http.StatusConflict, "conflict", 7, msg}
	case errors.Is(err, store.ErrDiskFull), store.Temporary(err):
		return apiError{http.StatusServiceUnavailable, "try_again", 75, msg}
	}
	return apiError{http.StatusInternalServerError, "internal", 70, msg}
}

var errBadRequest = errors.New("bad request")

func badRequest(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errBadRequest, fmt.Sprintf(format, a...))
}

func (s *server) fail(w http.ResponseWriter, r *http.Request, e apiError) {
	switch {
	case e.code == "try_again":
		// Busy, not broken: the stream cap, a held lock, a full disk.
		s.o.Logger.Warn("api: try again later", "method", r.Method, "path", r.URL.Path, "err", e.msg)
	case e.status >= 500:
		s.o.Logger.Error("api", "method", r.Method, "path", r.URL.Path, "err", e.msg)
	}
	writeJSON(w, e.status, map[string]any{"error": e.msg, "code": e.code, "exit_code": e.exit})
}

func (s *server) failErr(w http.ResponseWriter, r *http.Request, err error) {
	s.fail(w, r, errorOf(err))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func (s *server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, "ok\n")
}

// readyz answers once the database answers.
func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	if _, err := s.c.Counts(r.Context()); err != nil {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintf(w, "the database does not answer: %v\n", err)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, "ready\n")
}

// Loopback says whether addr (host:port) listens on loopback only.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Server is an http.Server with pcd's timeouts and limits: a slow client
// cannot hold a connection open, and headers are bounded.
// Its Shutdown ends the event streams of a Handler it serves.
func Server(addr string, h http.Handler, log *slog.Logger) *http.Server {
	srv := &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       5 * time.Minute, // a streamed submit may take that long
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if h, ok := h.(*handler); ok {
		srv.RegisterOnShutdown(h.closeStreams)
	}
	return srv
}

// intParam reads a query parameter as a whole number in [lo, hi], def
// if absent.
func intParam(r *http.Request, name string, def, lo, hi int64) (int64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, badRequest("%s must be a whole number from %d to %d, got %q", name, lo, hi, v)
	}
	return n, nil
}

func stateParam(r *http.Request) (store.State, error) {
	switch st := store.State(r.URL.Query().Get("state")); st {
	case "", store.Pending, store.Running, store.Succeeded, store.Failed, store.Cancelled:
		return st, nil
	}
	return "", badRequest("unknown state %q (want pending, running, succeeded, failed or cancelled)", r.URL.Query().Get("state"))
}
