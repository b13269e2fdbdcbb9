package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
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
printing each callback as it is released.

Exec tasks (-- CMD, --lines, ::: lists, exec tasks of a job file) print
what the command printed instead, as each task completes, a task at a time
and never interleaved: its stdout on stdout, its stderr on stderr. Their
callback lines and the job's line go to stderr with --verbose; a task
that failed gets a note there, so that stdout holds only the commands'
output. --keep-order prints tasks in task order; --no-output
prints callback lines instead of output. Every byte is printed: the
database keeps the last --output-cap bytes of each stream, and a longer
output (or one that is not text) is spooled to disk beside it, printed
from there, and removed with the job by pcd prune. If a spool cannot be
written, pcd says which output it cut, and exits 1.

The exit code is 0 when every
task succeeded and 1 otherwise. On SIGINT or SIGTERM it stops starting
tasks and lets running ones finish within --grace; a second signal
interrupts them. Unfinished work stays in the database.`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "demo", Usage: "run the classic demo: 10 sleep tasks of 0-1 s"},
			sourceFlags()[0], sourceFlags()[1], sourceFlags()[2], sourceFlags()[3], sourceFlags()[4], execFlags()[0],
			walWarnFlag(),
			retryFlags()[0], retryFlags()[1], retryFlags()[2], retryFlags()[3],
			limitFlags()[0], limitFlags()[1],
			sinkFlags()[0], sinkFlags()[1], sinkFlags()[2],
			deliveryFlags()[0], deliveryFlags()[1], deliveryFlags()[2], deliveryFlags()[3], deliveryFlags()[4],
			&cli.DurationFlag{Name: "delivery-wait", EnvVars: []string{"PCD_DELIVERY_WAIT"}, Value: 5 * time.Second, Usage: "once the job is done, how long to wait for its hooks and webhooks before leaving the rest to a daemon"},
			&cli.StringFlag{Name: "resume", Usage: "run the unfinished job `JOB_ID` (a stopped pcd run, say) here to its end"},
			&cli.IntFlag{Name: "workers", Aliases: []string{"w", "j", "jobs"}, EnvVars: []string{"PCD_WORKERS"}, Value: engine.DefaultWorkers, Usage: "consumers running tasks at once (parallel's -j)"},
			&cli.BoolFlag{Name: "tag", Usage: "put each task's arguments and a tab before each line of its output (like parallel --tag)"},
			&cli.BoolFlag{Name: "dry-run", Usage: "print the commands that would run, one a line, and run nothing (like parallel --dry-run)"},
			&cli.StringFlag{Name: "joblog", Usage: "write a line for each finished task to `FILE`, in GNU parallel's --joblog format"},
			&cli.BoolFlag{Name: "bar", Usage: "show a progress bar on stderr, even when it is not a terminal (like parallel --bar)"},
			&cli.BoolFlag{Name: "eta", Usage: "show the progress line, with the time left, on stderr (like parallel --eta)"},
			&cli.IntFlag{Name: "queue-size", Aliases: []string{"q"}, EnvVars: []string{"PCD_QUEUE_SIZE"}, Value: engine.DefaultQueueSize, Usage: "capacity of the in-memory queue"},
			&cli.StringFlag{Name: "name", Usage: "job name"},
			&cli.BoolFlag{Name: "json", Usage: "print events as NDJSON"},
			&cli.BoolFlag{Name: "quiet", Usage: "print no task callback lines (exec tasks' output is still printed)"},
			outputFlags()[0], outputFlags()[1], outputFlags()[2], outputFlags()[3], haltFlag(),
			&cli.DurationFlag{Name: "grace", EnvVars: []string{"PCD_GRACE"}, Value: 10 * time.Second, Usage: "on a stop signal, how long running tasks may finish"},
		},
		OnUsageError: onUsageError,
		Action:       func(c *cli.Context) error { return runJob(c, env) },
	}
}

func runJob(c *cli.Context, env Env) error {
	if ran, err := reexec(env); ran {
		return err
	}
	resume := c.String("resume")
	if err := checkFormat(c); err != nil {
		return err
	}
	cleanLive, err := configureExec(c, env)
	if err != nil {
		return err
	}
	defer cleanLive()
	jf, err := runSource(c, env, resume)
	if err != nil {
		return err
	}
	if c.Bool("dry-run") {
		if resume != "" {
			return usageError("--dry-run prints a new job's commands; it takes no --resume")
		}
		return dryRun(env, jf)
	}
	log, err := newLogger(c, env.Stderr)
	if err != nil {
		return err
	}
	delivery, err := deliveryConfig(c, log)
	if err != nil {
		return err
	}
	st, err := openRunner(c, log)
	if err != nil {
		return err
	}
	defer st.Close()
	// rd reads (the printer, the notes); db, once made, is the runner.
	rd := newClient(c, st, engine.RunnerConfig{})
	resumed, err := resumable(c, rd, resume)
	if err != nil {
		return err
	}
	opening, setRunner, stop, releaseSignals := stopper(c.Context, c.Duration("grace"), log)
	defer releaseSignals()
	out, err := newPrinter(c, env, rd)
	if err != nil {
		return err
	}
	// A closed stdout (pcd run | head) stops the run as Ctrl-C does: with
	// SIGPIPE caught, a write to it fails with EPIPE instead of killing
	// pcd before it can pause the job.
	pipe := make(chan os.Signal, 1)
	signal.Notify(pipe, syscall.SIGPIPE)
	defer signal.Stop(pipe)
	out.w = &closeWatch{w: out.w, closed: func() { stop("stdout was closed") }}
	out.ends = true
	if (isTerminal(env.Stderr) && !c.Bool("quiet") && !c.Bool("json")) || c.Bool("bar") || c.Bool("eta") {
		out.bar = newProgress(env.Stderr, false)
	}
	if path := c.String("joblog"); path != "" {
		if out.log, err = openJoblog(c.Context, path, rd); err != nil {
			return err
		}
	}
	db := newClient(c, st, runConfig(c, env, rd.Path(), log, delivery, out))
	err = db.Open(opening)
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
	defer db.Client.Close()
	setRunner(db)
	job := resumed
	if resume != "" {
		if err := sealResumed(c, env, db, resumed); err != nil {
			return err
		}
		if resumed.Paused {
			// --resume is a request to run it: a paused job would start
			// and drain at once.
			if _, err := db.Resume(c.Context, resumed.UUID); err != nil {
				return err
			}
			fmt.Fprintf(env.Stderr, "pcd: job %s was paused; it is resumed, and runs here\n", resumed.UUID)
		}
	}
	if err := noteOthers(c, env, db, resumed); err != nil {
		return err
	}
	if resume == "" {
		if job, err = db.Submit(c.Context, jf); err != nil {
			return err
		}
	}
	shown := out.outputShown(jf)
	if resume != "" {
		shown = out.output && firstKind(c, db, job) == "exec"
	}
	out.start(job, shown)
	err = runToEnd(c, env, db, out, job)
	if lerr := out.log.close(); err == nil {
		err = lerr
	}
	return err
}

// runConfig is pcd run's runner: one job, its events to out.
func runConfig(c *cli.Context, env Env, path string, log *slog.Logger, delivery engine.DeliveryConfig, out *printer) engine.RunnerConfig {
	return engine.RunnerConfig{
		Role:         engine.RoleRun,
		Subreaper:    true,
		Delivery:     delivery,
		DeliveryWait: c.Duration("delivery-wait"),
		Config:       engine.Config{Registry: env.Registry, Logger: log, OnEvent: out.event},
		OnLockWait: func(held *store.LockedError) {
			fmt.Fprintf(env.Stderr, "pcd: waiting for %s to finish its job on %s (Ctrl-C to give up; nothing is written yet)\n",
				strings.TrimPrefix(held.Error(), held.Path+": held by "), path)
		},
		OnDeliveryWait: func(wait time.Duration) {
			fmt.Fprintf(env.Stderr, "pcd: waiting up to %v for the job's callbacks to reach its hooks and webhooks\n", wait)
		},
	}
}

// resumable finds the job pcd run --resume names, if it does, and checks
// that this process can run it.
func resumable(c *cli.Context, rd *client, resume string) (store.Job, error) {
	if resume == "" {
		return store.Job{}, nil
	}
	job, err := rd.Job(c.Context, resume)
	if err != nil {
		return job, err
	}
	if job.Finished() {
		return job, fmt.Errorf("job %s already %s; nothing to resume: %w", job.UUID, job.State, store.ErrConflict)
	}
	return job, rd.CanRun(job)
}

// runSource is the job pcd run runs, from its flags and arguments; none
// for --resume, which takes no other source.
func runSource(c *cli.Context, env Env, resume string) (engine.JobFile, error) {
	if resume != "" {
		if c.Bool("demo") || c.NArg() > 0 || c.IsSet("sleep") || c.IsSet("lines") || env.command != nil {
			return engine.JobFile{}, usageError("give --resume JOB_ID alone, without another job source")
		}
		return engine.JobFile{}, nil
	}
	jf, stream, err := jobSource(c, env, c.Bool("demo"))
	if err != nil {
		return jf, err
	}
	if stream {
		return jf, usageError("pcd run takes no NDJSON stream; use pcd submit - with a daemon")
	}
	return jf, applyJobFlags(c, &jf)
}

// sealResumed seals a resumed job whose submitter is gone, and says so.
func sealResumed(c *cli.Context, env Env, db *client, resumed store.Job) error {
	if resumed.Sealed {
		return nil
	}
	sealed, err := db.SealOrphan(c.Context, resumed)
	switch {
	case err != nil:
		return err
	case sealed:
		fmt.Fprintf(env.Stderr, "pcd: job %s's submitter is gone: it is sealed with the %s that committed\n", resumed.UUID, plural(resumed.Total, "task"))
	default:
		fmt.Fprintf(env.Stderr, "pcd: job %s is still being submitted; its tasks run as they come\n", resumed.UUID)
	}
	return nil
}

// noteOthers says how many other unfinished jobs pcd run leaves alone.
func noteOthers(c *cli.Context, env Env, db *client, resumed store.Job) error {
	others, err := db.UnfinishedJobs(c.Context)
	if err != nil {
		return err
	}
	n := len(others)
	if n == 0 || (n == 1 && others[0].ID == resumed.ID) {
		return nil
	}
	if resumed.ID != 0 {
		n--
	}
	fmt.Fprintf(env.Stderr, "pcd: note: %s in %s not run by `pcd run`; start `pcd daemon` to resume them, or `pcd run --resume JOB_ID`\n",
		plural(n, "other unfinished job"), db.Path())
	return nil
}

// runToEnd runs the job and turns how it ended into pcd run's exit.
func runToEnd(c *cli.Context, env Env, db *client, out *printer, job store.Job) error {
	done, err := db.RunJob(c.Context, job.UUID)
	if out.order != nil {
		out.order.flush(out.task)
	}
	if done.UUID != "" {
		out.bar.summary(done, time.Since(out.began))
	}
	if errors.Is(err, engine.ErrStopped) {
		return stoppedByUser(c, db, out, done, err)
	}
	if err != nil {
		return err
	}
	if left, err := db.PendingDeliveries(c.Context, done); err == nil && left > 0 {
		fmt.Fprintf(env.Stderr, "pcd: %d callback deliveries of job %s are still pending; they are kept, and `pcd daemon` delivers them (`pcd callbacks %s` shows them)\n",
			left, done.UUID, done.UUID[:8])
	}
	if out.err != nil {
		return fmt.Errorf("write output: %w", out.err)
	}
	if done.State != store.Succeeded {
		if out.bar != nil {
			return saidError{jobFailed{done}} // the summary line said it
		}
		return jobFailed{done}
	}
	if out.cut > 0 {
		return fmt.Errorf("job %s succeeded, but %s of its tasks' output could not be printed whole (see the notes above): %w",
			done.UUID, plural(int64(out.cut), "stream"), ErrOutputCut)
	}
	return nil
}

// stoppedByUser pauses a job whose pcd run its user stopped (Ctrl-C,
// SIGTERM, a closed stdout), so that no daemon runs the rest of it until
// the user says so, and says how to go on.
func stoppedByUser(c *cli.Context, db *client, out *printer, done store.Job, stopped error) error {
	how := "it is paused: `pcd run --resume " + done.UUID[:8] + "` runs the rest here, `pcd resume " + done.UUID[:8] + "` gives it to a daemon"
	if _, err := db.Pause(context.WithoutCancel(c.Context), done.UUID); err != nil {
		how = fmt.Sprintf("it could not be paused (%v), so a daemon may run the rest; `pcd run --resume %s` runs it here", err, done.UUID[:8])
	}
	why := stopped
	if w, ok := out.w.(*closeWatch); ok && w.isClosed() {
		why = ErrOutputClosed
	}
	if errors.Is(why, ErrInterrupted) {
		why = engine.ErrStopped
	}
	return fmt.Errorf("job %s stopped with %d of %s done; %s: %w", done.UUID, done.Done(), plural(done.Total, "task"), how, why)
}

// closeWatch is pcd run's stdout: the first write that finds it closed
// (EPIPE) calls closed, once.
type closeWatch struct {
	w      io.Writer
	closed func()
	once   sync.Once
	gone   atomic.Bool
}

func (w *closeWatch) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	if errors.Is(err, syscall.EPIPE) {
		w.gone.Store(true)
		w.once.Do(w.closed)
	}
	return n, err
}

func (w *closeWatch) isClosed() bool { return w.gone.Load() }

// firstKind is the kind of a job's first task, "" if it has none.
func firstKind(c *cli.Context, db *client, job store.Job) string {
	rows, err := db.Tasks(c.Context, job.UUID, engine.TaskFilter{Limit: 1})
	if err != nil || len(rows) == 0 {
		return ""
	}
	return rows[0].Kind
}

func pidOf() int { return os.Getpid() }

// handOff gives the job to the daemon that holds the runner lock and
// follows it there, with the same output as running it here.
func handOff(c *cli.Context, env Env, db *client, jf engine.JobFile, held *store.LockedError) error {
	job, err := db.Submit(c.Context, jf)
	if err != nil {
		return err
	}
	who := "another process"
	if held.PID > 0 {
		who = fmt.Sprintf("pid %d", held.PID)
	}
	fmt.Fprintf(env.Stderr, "pcd: %s runs this database; job %s was handed to it\n", who, job.UUID)
	out, err := newPrinter(c, env, db)
	if err != nil {
		return err
	}
	out.start(job, out.outputShown(jf))
	err = follow(c, env, db, followOptions{jobs: []string{job.UUID}, json: c.Bool("json"), out: out, noBar: true})
	if errors.Is(err, ErrInterrupted) || errors.Is(err, syscall.EPIPE) {
		// Stopped by its user, as if it ran here: the daemon stops it too.
		done, jerr := db.Job(context.WithoutCancel(c.Context), job.UUID)
		if jerr == nil && !done.Finished() {
			if errors.Is(err, syscall.EPIPE) {
				err = ErrOutputClosed
			}
			return stoppedByUser(c, db, out, done, err)
		}
	}
	if errors.Is(err, ErrJobFailed) {
		// As pcd run says it when it runs the job itself.
		if done, jerr := db.Job(c.Context, job.UUID); jerr == nil {
			return jobFailed{done}
		}
	}
	return err
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
