package cli

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/store"
)

// maxWorkers and maxQueueSize bound what a flag may ask for.
const (
	maxWorkers   = 10_000
	maxQueueSize = 1_000_000
)

func runCommand(env Env) *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "run a job in this process, with no daemon",
		ArgsUsage: "[--demo | FILE | --sleep N | --lines FILE | --resume JOB_ID | -- CMD ARGS...]",
		Description: `Runs a job file (or, with --demo, 10 sleep tasks of 0-1 s) on the database,
printing each callback as it is released. The exit code is 0 when every
task succeeded and 1 otherwise. On SIGINT or SIGTERM it stops starting
tasks and lets running ones finish within --grace; a second signal
interrupts them. Unfinished work stays in the database.`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "demo", Usage: "run the classic demo: 10 sleep tasks of 0-1 s"},
			sourceFlags()[0], sourceFlags()[1], sourceFlags()[2], execFlags()[0],
			walWarnFlag(),
			retryFlags()[0], retryFlags()[1], retryFlags()[2], retryFlags()[3],
			sinkFlags()[0], sinkFlags()[1], sinkFlags()[2],
			deliveryFlags()[0], deliveryFlags()[1], deliveryFlags()[2], deliveryFlags()[3], deliveryFlags()[4],
			&cli.DurationFlag{Name: "delivery-wait", EnvVars: []string{"PCD_DELIVERY_WAIT"}, Value: 5 * time.Second, Usage: "once the job is done, how long to wait for its hooks and webhooks before leaving the rest to a daemon"},
			&cli.StringFlag{Name: "resume", Usage: "run the unfinished job `JOB_ID` (a stopped pcd run, say) here to its end"},
			&cli.IntFlag{Name: "workers", Aliases: []string{"w"}, EnvVars: []string{"PCD_WORKERS"}, Value: engine.DefaultWorkers, Usage: "consumers running tasks at once"},
			&cli.IntFlag{Name: "queue-size", Aliases: []string{"q"}, EnvVars: []string{"PCD_QUEUE_SIZE"}, Value: engine.DefaultQueueSize, Usage: "capacity of the in-memory queue"},
			&cli.StringFlag{Name: "name", Usage: "job name"},
			&cli.BoolFlag{Name: "json", Usage: "print events as NDJSON"},
			&cli.BoolFlag{Name: "quiet", Usage: "print only the job's completion"},
			&cli.DurationFlag{Name: "grace", EnvVars: []string{"PCD_GRACE"}, Value: 10 * time.Second, Usage: "on a stop signal, how long running tasks may finish"},
		},
		OnUsageError: onUsageError,
		Action:       func(c *cli.Context) error { return runJob(c, env) },
	}
}

func runJob(c *cli.Context, env Env) error {
	resume := c.String("resume")
	if err := configureExec(c, env); err != nil {
		return err
	}
	var jf engine.JobFile
	if resume != "" {
		if c.Bool("demo") || c.NArg() > 0 || c.IsSet("sleep") || c.IsSet("lines") || env.command != nil {
			return usageError("give --resume JOB_ID alone, without another job source")
		}
	} else {
		var err error
		var stream bool
		if jf, stream, err = jobSource(c, env, c.Bool("demo")); err != nil {
			return err
		}
		if stream {
			return usageError("pcd run takes no NDJSON stream; use pcd submit - with a daemon")
		}
		if err := applyJobFlags(c, &jf); err != nil {
			return err
		}
	}
	log, err := newLogger(c, env.Stderr)
	if err != nil {
		return err
	}
	delivery, err := deliveryConfig(c, log)
	if err != nil {
		return err
	}
	db, err := openRunner(c, log)
	if err != nil {
		return err
	}
	defer db.Close()
	var resumed store.Job
	if resume != "" {
		if resumed, err = db.FindJob(c.Context, resume); err != nil {
			return err
		}
		if resumed.Finished() {
			return fmt.Errorf("job %s already %s; nothing to resume: %w", resumed.UUID, resumed.State, store.ErrConflict)
		}
	}
	lock, err := acquireForRun(c, env, db)
	var held *store.LockedError
	if errors.As(err, &held) {
		// The holder is a daemon: it runs every job of the database.
		if resume != "" {
			return fmt.Errorf("the daemon runs this database and resumes job %s itself; follow it with `pcd watch %s`: %w",
				resumed.UUID, resumed.UUID[:8], err)
		}
		return handOff(c, env, db, jf, held)
	}
	if err != nil {
		return err
	}
	defer lock.Release()
	if db.CheckDeferred() {
		// The daemon checks a large file in the background; pcd run, a
		// single job, finishes the check before it writes.
		if err := db.Check(c.Context); err != nil {
			return err
		}
	}
	stopReaping, err := engine.Subreaper()
	if err != nil {
		log.Warn("descendants of tasks that leave their process group may outlive them", "err", err)
	}
	defer stopReaping()
	if err := engine.Recover(c.Context, db, log); err != nil {
		return err
	}
	if resume != "" && !resumed.Sealed {
		sealed, err := db.SealOrphan(c.Context, resumed.ID)
		switch {
		case err != nil:
			return err
		case sealed:
			fmt.Fprintf(env.Stderr, "pcd: job %s's submitter is gone: it is sealed with the %d tasks that committed\n", resumed.UUID, resumed.Total)
		default:
			fmt.Fprintf(env.Stderr, "pcd: job %s is still being submitted; its tasks run as they come\n", resumed.UUID)
		}
	}

	if others, err := db.UnfinishedJobs(c.Context); err != nil {
		return err
	} else if n := len(others); n > 0 && !(n == 1 && others[0].ID == resumed.ID) {
		if resume != "" {
			n--
		}
		fmt.Fprintf(env.Stderr, "pcd: note: %d other unfinished job(s) in %s are not run by `pcd run`; start `pcd daemon` to resume them, or `pcd run --resume JOB_ID`\n",
			n, db.Path())
	}

	job := resumed
	if resume == "" {
		if job, err = db.CreateJob(c.Context, jf.NewJob()); err != nil {
			return err
		}
	}
	out := &printer{w: env.Stdout, json: c.Bool("json"), quiet: c.Bool("quiet")}
	out.start(job)
	// The job's hooks and webhooks, delivered here as its callbacks commit.
	delivery.Scope, delivery.Wake = job.ID, engine.NewNotifier()
	deliveries := engine.NewDeliveries(db, delivery)
	// Wake-ups reach this runner too: pcd cancel tells it to stop.
	wake := engine.NewNotifier()
	if l, err := engine.ListenWake(db.Path(), wake, log); err != nil {
		log.Debug("no wake socket; a pcd cancel is noticed within a second", "err", err)
	} else {
		defer l.Close()
	}
	ctl := engine.NewJobController(db, engine.Config{
		Registry: env.Registry,
		Logger:   log,
		OnEvent:  out.event,
		OnCommit: delivery.Wake.Notify,
		Wake:     wake,
	})

	ctx, cancel := context.WithCancel(c.Context)
	defer cancel()
	stopSignals := handleStop(ctx, ctl, cancel, c.Duration("grace"), log)
	defer stopSignals()
	deliveryCtx, stopDelivery := context.WithCancel(ctx)
	defer deliveries.Wait()
	defer stopDelivery()
	deliveries.Ensure(deliveryCtx)

	done, err := ctl.Run(ctx, job.ID)
	if err == nil {
		// The job is finished: its sinks finish once its callbacks are out,
		// or when --delivery-wait runs out; the rest stay for a daemon.
		delivery.Wake.Notify()
		waitDeliveries(c, env, db, done, deliveries, stopDelivery, c.Duration("delivery-wait"))
	}
	if errors.Is(err, engine.ErrStopped) {
		return fmt.Errorf("job %s stopped with %d of %d tasks done; its progress is saved (resume it with `pcd run --resume %s`): %w",
			job.UUID, done.Done(), done.Total, job.UUID[:8], err)
	}
	if err != nil {
		return err
	}
	if out.err != nil {
		return fmt.Errorf("write output: %w", out.err)
	}
	if done.State != store.Succeeded {
		return jobFailed{done}
	}
	return nil
}

func pidOf() int { return os.Getpid() }

// acquireForRun takes the runner lock for pcd run. If a daemon holds it,
// the *LockedError is returned: the daemon runs the job. If another
// pcd run holds it, which runs only its own job, this one waits for it
// to finish, and says so.
func acquireForRun(c *cli.Context, env Env, db *store.DB) (*store.RunnerLock, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	said := false
	for {
		lock, err := store.AcquireRunnerLock(db.Path(), "run")
		var held *store.LockedError
		if !errors.As(err, &held) || held.Role == "daemon" {
			return lock, err
		}
		if !said {
			fmt.Fprintf(env.Stderr, "pcd: waiting for %s to finish its job on %s (Ctrl-C to give up; nothing is written yet)\n",
				strings.TrimPrefix(held.Error(), held.Path+": held by "), db.Path())
			said = true
		}
		select {
		case <-tick.C:
		case <-c.Context.Done():
			return nil, c.Context.Err()
		}
	}
}

// waitDeliveries waits, at most wait, for the job's hooks and webhooks,
// saying so when that takes a while. Then it stops them and says how many
// deliveries are left: they are kept in the database, and a daemon
// delivers them.
func waitDeliveries(c *cli.Context, env Env, db *store.DB, job store.Job, d *engine.Deliveries, stop func(), wait time.Duration) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.Wait()
	}()
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	select {
	case <-done:
		return
	case <-time.After(min(time.Second, wait)):
	}
	fmt.Fprintf(env.Stderr, "pcd: waiting up to %v for the job's callbacks to reach its hooks and webhooks\n", wait)
	select {
	case <-done:
		return
	case <-timeout.C:
	}
	stop()
	<-done
	left, err := engine.PendingDeliveries(c.Context, db, job)
	if err != nil || left == 0 {
		return
	}
	fmt.Fprintf(env.Stderr, "pcd: %d callback deliveries of job %s are still pending; they are kept, and `pcd daemon` delivers them (`pcd callbacks %s` shows them)\n",
		left, job.UUID, job.UUID[:8])
}

// handOff gives the job to the daemon that holds the runner lock and
// follows it there, with the same output as running it here.
func handOff(c *cli.Context, env Env, db *store.DB, jf engine.JobFile, held *store.LockedError) error {
	job, err := db.CreateJob(c.Context, jf.NewJob())
	if err != nil {
		return err
	}
	_ = engine.Wake(db.Path())
	who := "another process"
	if held.PID > 0 {
		who = fmt.Sprintf("pid %d", held.PID)
	}
	fmt.Fprintf(env.Stderr, "pcd: %s runs this database; job %s was handed to it\n", who, job.UUID)
	out := &printer{w: env.Stdout, json: c.Bool("json"), quiet: c.Bool("quiet")}
	out.start(job)
	return follow(c, env, db, followOptions{jobIDs: []int64{job.ID}, json: c.Bool("json"), out: out})
}

// handleStop makes the first SIGINT or SIGTERM drain the controller and
// starts the grace period; the second signal, or the end of the grace,
// cancels. The returned function stops listening.
func handleStop(ctx context.Context, ctl interface{ Drain() }, cancel context.CancelFunc, grace time.Duration, log interface{ Info(string, ...any) }) func() {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		var timeout <-chan time.Time
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case sig := <-sigs:
				if timeout != nil {
					log.Info("second signal: interrupting running tasks", "signal", sig.String())
					cancel()
					return
				}
				log.Info("stopping: running tasks may finish", "signal", sig.String(), "grace", grace)
				ctl.Drain()
				timer := time.NewTimer(grace)
				defer timer.Stop()
				timeout = timer.C
			case <-timeout:
				log.Info("grace period over: interrupting running tasks")
				cancel()
				return
			}
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(done)
		<-stopped
	}
}

// sleepJob is n sleeps of 0-1 s at random.
func sleepJob(n int) engine.JobFile {
	jf := engine.JobFile{Name: "demo"}
	for range n {
		secs := fmt.Appendf(nil, `{"secs":%.4f}`, rand.Float64())
		jf.Tasks = append(jf.Tasks, engine.TaskSpec{Kind: "sleep", Payload: secs})
	}
	return jf
}

// applySizeFlags lets --workers and --queue-size override the job file.
func applySizeFlags(c *cli.Context, jf *engine.JobFile) error {
	if c.IsSet("workers") || jf.Workers == 0 {
		jf.Workers = c.Int("workers")
	}
	if c.IsSet("queue-size") || jf.QueueSize == 0 {
		jf.QueueSize = c.Int("queue-size")
	}
	if jf.Workers < 1 || jf.Workers > maxWorkers {
		return usageError("--workers must be between 1 and %d, got %d", maxWorkers, jf.Workers)
	}
	if jf.QueueSize < 1 || jf.QueueSize > maxQueueSize {
		return usageError("--queue-size must be between 1 and %d, got %d", maxQueueSize, jf.QueueSize)
	}
	return nil
}
