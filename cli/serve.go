package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pcd-dev/pcd/web"
)

// httpFlags serve the API, for pcd daemon and pcd serve.
func httpFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "http", EnvVars: []string{"PCD_HTTP"}, Usage: "serve the HTTP API and /metrics on `ADDR` (host:port; loopback unless a token is set)"},
		&cli.StringFlag{Name: "http-token", EnvVars: []string{"PCD_HTTP_TOKEN"}, Usage: "require `TOKEN` as a bearer token (needed to listen beyond loopback)"},
		&cli.StringFlag{Name: "http-token-file", EnvVars: []string{"PCD_HTTP_TOKEN_FILE"}, Usage: "read the token from `FILE` (its first line)"},
		&cli.StringSliceFlag{Name: "http-allow-host", EnvVars: []string{"PCD_HTTP_ALLOW_HOSTS"}, Usage: "also answer requests whose Host is `NAME` when there is no token (loopback names and addresses are always answered; repeat, or separate by commas)"},
		&cli.StringFlag{Name: "tls-cert", EnvVars: []string{"PCD_TLS_CERT"}, Usage: "serve HTTPS with the certificate (chain) in `FILE` (PEM)"},
		&cli.StringFlag{Name: "tls-key", EnvVars: []string{"PCD_TLS_KEY"}, Usage: "the certificate's private key in `FILE` (PEM)"},
	}
}

// httpConfig is what --http and its flags ask for.
type httpConfig struct {
	addr, token     string
	tlsCert, tlsKey string
	allowHosts      []string
}

// httpToken reads --http-token or --http-token-file.
func httpToken(c *cli.Context) (string, error) {
	token, file := c.String("http-token"), c.String("http-token-file")
	if token != "" && file != "" {
		return "", usageError("give --http-token or --http-token-file, not both")
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", usageError("--http-token-file: %w", err)
		}
		token, _, _ = strings.Cut(string(b), "\n")
		token = strings.TrimSpace(token)
		if token == "" {
			return "", usageError("--http-token-file %s is empty", file)
		}
	}
	if token != "" && len(token) < 16 {
		return "", usageError("the HTTP token must be at least 16 characters, got %d", len(token))
	}
	return token, nil
}

// checkHTTP checks --http before anything is opened: a listener beyond
// loopback needs a token; TLS needs a certificate and its key, which
// load.
func checkHTTP(c *cli.Context) (httpConfig, error) {
	h := httpConfig{addr: c.String("http"), tlsCert: c.String("tls-cert"), tlsKey: c.String("tls-key")}
	if h.addr == "" {
		if h.tlsCert != "" || h.tlsKey != "" || c.String("http-token") != "" || c.String("http-token-file") != "" || len(c.StringSlice("http-allow-host")) > 0 {
			return h, usageError("--tls-cert, --tls-key, --http-token and --http-allow-host go with --http ADDR")
		}
		return h, nil
	}
	for _, name := range c.StringSlice("http-allow-host") {
		name = strings.TrimSpace(name)
		if name == "" || strings.ContainsAny(name, ":/ ") {
			return h, usageError("--http-allow-host %q: want a host name, such as pcd.internal", name)
		}
		h.allowHosts = append(h.allowHosts, name)
	}
	if _, _, err := net.SplitHostPort(h.addr); err != nil {
		return h, usageError("--http %q: want host:port, such as 127.0.0.1:8700", h.addr)
	}
	var err error
	if h.token, err = httpToken(c); err != nil {
		return h, err
	}
	if !web.Loopback(h.addr) && h.token == "" {
		return h, usageError("--http %s listens beyond loopback: give --http-token or --http-token-file, or listen on 127.0.0.1", h.addr)
	}
	if (h.tlsCert == "") != (h.tlsKey == "") {
		return h, usageError("give both --tls-cert and --tls-key")
	}
	if h.tlsCert != "" {
		if _, err := tls.LoadX509KeyPair(h.tlsCert, h.tlsKey); err != nil {
			return h, usageError("--tls-cert, --tls-key: %w", err)
		}
	}
	return h, nil
}

// startHTTP serves the API of db on addr until the returned stop is
// called; it returns once the listener is up.
func startHTTP(hc httpConfig, db *client, env Env, log *slog.Logger, metrics *web.Metrics, feed *web.Feed) (stop func(), err error) {
	addr, token := hc.addr, hc.token
	ln, err := net.Listen("tcp", addr)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, fmt.Errorf("--http %s: another process listens on that address already (a pcd serve or daemon --http?); give another port: %w", addr, ErrListen)
	case errors.Is(err, syscall.EACCES):
		return nil, fmt.Errorf("--http %s: not allowed to listen there (a port below 1024 needs privilege); give a port of 1024 or more: %w", addr, ErrListen)
	case err != nil:
		return nil, fmt.Errorf("--http %s: %w (%w)", addr, err, ErrListen)
	}
	if metrics == nil {
		metrics = web.NewMetrics(db.Client)
	}
	h := web.Handler(db.Client, web.Options{Token: token, Logger: log, Version: Version(), Metrics: metrics.Handler(), Feed: feed, AllowHosts: hc.allowHosts})
	srv := web.Server(addr, h, log)
	done := make(chan struct{})
	go func() {
		defer close(done)
		serve := func() error { return srv.Serve(ln) }
		if hc.tlsCert != "" {
			serve = func() error { return srv.ServeTLS(ln, hc.tlsCert, hc.tlsKey) }
		}
		if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "err", err)
		}
	}()
	log.Info("http api listening", "addr", ln.Addr().String(), "token", token != "", "tls", hc.tlsCert != "")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}

func serveCommand(env Env) *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "serve the HTTP API of a database, with no runner",
		Description: `Serves the HTTP API (and /metrics, /healthz, /readyz) of the database, as
pcd daemon --http does, but runs no job: beside a daemon on another
machine (PostgreSQL), or to look at a SQLite file.`,
		Flags:        httpFlags(),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageError("serve takes no arguments, got %q", c.Args().First())
			}
			hc, err := checkHTTP(c)
			if err != nil {
				return err
			}
			if hc.addr == "" {
				return usageError("give --http ADDR, such as 127.0.0.1:8700")
			}
			log, err := newLogger(c, env.Stderr)
			if err != nil {
				return err
			}
			db, err := openDB(c, true)
			if err != nil {
				return err
			}
			defer db.Close()
			ctx, cancel := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
			defer cancel()
			stop, err := startHTTP(hc, db, env, log, nil, nil)
			if err != nil {
				return err
			}
			<-ctx.Done()
			stop()
			return nil
		},
	}
}
