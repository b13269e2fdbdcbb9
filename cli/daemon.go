package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/web"
)

func daemonCommand(env Env) *cli.Command {
	return &cli.Command{
		Name:  "daemon",
		Usage: "run submitted jobs until stopped",
		Description: `Runs the database's unfinished jobs in submission order, and new ones as
they are submitted. It stays in the foreground and logs to stderr, so it
suits systemd. Only one daemon (or pcd run) may run a database at a time.

On SIGTERM or SIGINT it stops starting tasks and lets running ones finish
within --grace, then interrupts the rest (at once on a second signal).
Interrupted tasks go back to pending without spending an attempt, and the
next start resumes them. The exit code is then 0.`,
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "max-jobs", EnvVars: []string{"PCD_MAX_JOBS"}, Value: 1, Usage: "jobs to run at once"},
			&cli.DurationFlag{Name: "grace", EnvVars: []string{"PCD_GRACE"}, Value: 10 * time.Second, Usage: "on a stop signal, how long running tasks may finish"},
			execFlags()[0],
			walWarnFlag(),
			sinkFlags()[0], sinkFlags()[1], sinkFlags()[2],
			deliveryFlags()[0], deliveryFlags()[1], deliveryFlags()[2], deliveryFlags()[3], deliveryFlags()[4],
			&cli.DurationFlag{Name: "retain", EnvVars: []string{"PCD_RETAIN"}, Usage: "prune jobs that finished longer ago than `DURATION`, in the background; 0 keeps everything"},
			&cli.Int64Flag{Name: "replay-from", EnvVars: []string{"PCD_REPLAY_FROM"}, Usage: "deliver again to the daemon's hooks and webhooks every callback from `CALLBACK_ID` on (a new sink otherwise starts with the callbacks committed after it first appears)"},
			&cli.DurationFlag{Name: "retry-after", EnvVars: []string{"PCD_RETRY_AFTER"}, Value: 5 * time.Second, Usage: "after a database error (disk full, busy), how long to wait before taking work again"},
			httpFlags()[0], httpFlags()[1], httpFlags()[2], httpFlags()[3], httpFlags()[4], httpFlags()[5],
		},
		OnUsageError: onUsageError,
		Action:       func(c *cli.Context) error { return runDaemon(c, env) },
	}
}

func runDaemon(c *cli.Context, env Env) error {
	if ran, err := reexec(env); ran {
		return err
	}
	if c.NArg() > 0 {
		return usageError("daemon takes no arguments, got %q", c.Args().First())
	}
	if n := c.Int("max-jobs"); n < 1 || n > maxWorkers {
		return usageError("--max-jobs must be between 1 and %d, got %d", maxWorkers, n)
	}
	cleanLive, err := configureExec(c, env)
	if err != nil {
		return err
	}
	defer cleanLive()
	log, err := newLogger(c, env.Stderr)
	if err != nil {
		return err
	}
	delivery, err := daemonDelivery(c, log)
	if err != nil {
		return err
	}
	hc, err := checkHTTP(c)
	if err != nil {
		return err
	}
	st, err := openRunner(c, log)
	if err != nil {
		return err
	}
	defer st.Close()
	opening, setRunner, _, releaseSignals := stopper(c.Context, c.Duration("grace"), log)
	defer releaseSignals()
	cfg := engine.Config{Registry: env.Registry, Logger: log, OnEvent: logEvent(log)}
	var metrics *web.Metrics
	var feed *web.Feed
	if hc.addr != "" {
		metrics, feed = feedHTTP(newClient(c, st, engine.RunnerConfig{}).Client, &cfg)
	}
	db := newClient(c, st, engine.RunnerConfig{
		Role:       engine.RoleDaemon,
		Subreaper:  true,
		Delivery:   delivery,
		Config:     cfg,
		MaxJobs:    c.Int("max-jobs"),
		Retain:     c.Duration("retain"),
		RetryAfter: c.Duration("retry-after"),
	})
	err = db.Open(opening)
	var held *store.LockedError
	switch {
	case errors.As(err, &held):
		return fmt.Errorf("another pcd is running this database: %w", err)
	case err != nil && opening.Err() != nil && c.Context.Err() == nil:
		log.Info("daemon stopped before it started")
		return nil
	case err != nil:
		return err
	}
	defer db.Client.Close()
	setRunner(db)
	if hc.addr != "" {
		stopHTTP, err := startHTTP(hc, db, env, log, metrics, feed)
		if err != nil {
			return err
		}
		defer stopHTTP()
	}
	log.Info("daemon started", "db", db.Path(), "pid", pidOf(), "max_jobs", c.Int("max-jobs"))
	err = db.Run(c.Context)
	log.Info("daemon stopped")
	return err
}

// feedHTTP makes the runner of cfg feed the HTTP side: its commits feed
// the event streams (they need not be read back from the database), its
// events and group commits /metrics.
func feedHTTP(c *engine.Client, cfg *engine.Config) (*web.Metrics, *web.Feed) {
	feed := new(web.Feed)
	cfg.OnCallbacks = feed.Offer
	metrics := web.NewMetrics(c)
	logged := cfg.OnEvent
	cfg.OnEvent = func(ev engine.Event) {
		logged(ev)
		metrics.Observe(ev)
	}
	cfg.OnGroupCommit = metrics.GroupCommit
	return metrics, feed
}

// daemonDelivery is the daemon's callback delivery, from its flags.
func daemonDelivery(c *cli.Context, log *slog.Logger) (engine.DeliveryConfig, error) {
	delivery, err := deliveryConfig(c, log)
	if err != nil {
		return delivery, err
	}
	if delivery.Sinks, err = sinksFromFlags(c); err != nil {
		return delivery, err
	}
	if c.Duration("retain") < 0 {
		return delivery, usageError("--retain must not be negative, got %v", c.Duration("retain"))
	}
	if c.Int64("replay-from") < 0 {
		return delivery, usageError("--replay-from must be a callback id, got %d", c.Int64("replay-from"))
	}
	delivery.ReplayFrom = c.Int64("replay-from")
	return delivery, nil
}

// logEvent is the daemon's log sink for callbacks.
func logEvent(log interface {
	Debug(string, ...any)
	Info(string, ...any)
}) func(engine.Event) {
	return func(ev engine.Event) {
		switch {
		case ev.Task != nil:
			log.Debug("task completed", "callback_id", ev.CallbackID, "job", ev.JobID, "task", ev.Task.ID,
				"number", ev.Task.Number, "state", ev.Task.State, "time_secs", ev.Task.TimeSecs, "error", ev.Task.Error)
		case ev.Job != nil:
			log.Info("job completed", "callback_id", ev.CallbackID, "job", ev.JobID, "outcome", ev.Job.Outcome,
				"elapsed_secs", ev.Job.ElapsedSecs, "total", ev.Job.Total, "failed", ev.Job.Failed, "cancelled", ev.Job.Cancelled)
		}
	}
}
