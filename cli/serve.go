package cli

import (
	"context"
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

	"github.com/pcd-dev/pcd/cli/web"
	"github.com/pcd-dev/pcd/store"
)

// httpFlags serve the API, for pcd daemon and pcd serve.
func httpFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "http", EnvVars: []string{"PCD_HTTP"}, Usage: "serve the HTTP API and /metrics on `ADDR` (host:port; loopback unless a token is set)"},
		&cli.StringFlag{Name: "http-token", EnvVars: []string{"PCD_HTTP_TOKEN"}, Usage: "require `TOKEN` as a bearer token (needed to listen beyond loopback)"},
		&cli.StringFlag{Name: "http-token-file", EnvVars: []string{"PCD_HTTP_TOKEN_FILE"}, Usage: "read the token from `FILE` (its first line)"},
	}
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
// loopback needs a token.
func checkHTTP(c *cli.Context) (addr, token string, err error) {
	addr = c.String("http")
	if addr == "" {
		return "", "", nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return "", "", usageError("--http %q: want host:port, such as 127.0.0.1:8700", addr)
	}
	if token, err = httpToken(c); err != nil {
		return "", "", err
	}
	if !web.Loopback(addr) && token == "" {
		return "", "", usageError("--http %s listens beyond loopback: give --http-token or --http-token-file, or listen on 127.0.0.1", addr)
	}
	return addr, token, nil
}

// startHTTP serves the API of db on addr until the returned stop is
// called; it returns once the listener is up.
func startHTTP(addr, token string, db store.Store, env Env, log *slog.Logger, metrics *web.Metrics) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--http %s: %w", addr, err)
	}
	if metrics == nil {
		metrics = web.NewMetrics(db)
	}
	h := web.Handler(db, web.Options{Token: token, Registry: env.Registry, Logger: log, Version: Version(), Metrics: metrics.Handler()})
	srv := web.Server(addr, h, log)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "err", err)
		}
	}()
	log.Info("http api listening", "addr", ln.Addr().String(), "token", token != "")
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
			addr, token, err := checkHTTP(c)
			if err != nil {
				return err
			}
			if addr == "" {
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
			stop, err := startHTTP(addr, token, db, env, log, nil)
			if err != nil {
				return err
			}
			<-ctx.Done()
			stop()
			return nil
		},
	}
}
