package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/store"
)

// ErrInterrupted means a signal ended a command that only watches; the
// jobs go on.
var ErrInterrupted = errors.New("interrupted")

func watchCommand(env Env) *cli.Command {
	return &cli.Command{
		Name:      "watch",
		Usage:     "follow jobs' callbacks live",
		ArgsUsage: "[JOB_ID...] | --all",
		Description: `Prints the committed callbacks of the given jobs (id prefixes work), from
their first event, in the format of pcd run, or NDJSON with --json. It
follows across daemon restarts with no event shown twice and none missed.
On a terminal it also shows a progress line on stderr. Exec tasks print
their commands' output instead of their callback lines, as pcd run does
(--no-output, --keep-order and --verbose work as there).

It exits when the jobs are complete: 0 if every task succeeded, 1 if any
failed. With --follow it keeps following, new jobs too; --follow with no
job id follows every job. If the daemon stops while it watches, it says
so once, and again when a daemon is back.`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "all", Usage: "watch every job"},
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep following after the jobs complete"},
			&cli.BoolFlag{Name: "json", Usage: "print events as NDJSON, with no progress line"},
			&cli.Int64Flag{Name: "after", Usage: "resume after this callback `ID`"},
			outputFlags()[0], outputFlags()[1], outputFlags()[2], outputFlags()[3],
		},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			switch {
			case c.Bool("all") && c.NArg() > 0:
				return usageError("give job ids or --all, not both")
			case !c.Bool("all") && c.NArg() == 0 && !c.Bool("follow"):
				return usageError("give job ids, or --all (with --follow, no ids follows every job)")
			}
			db, err := openReader(c)
			if err != nil {
				return err
			}
			defer db.Close()
			var ids []string
			for _, ref := range c.Args().Slice() {
				job, err := db.Job(c.Context, ref)
				if err != nil {
					return err
				}
				ids = append(ids, job.UUID)
			}
			return follow(c, env, db, followOptions{jobs: ids, follow: c.Bool("follow"), json: c.Bool("json"), after: c.Int64("after")})
		},
	}
}

type followOptions struct {
	jobs   []string // none: every job
	follow bool
	json   bool
	after  int64
	// out prints the events; default a printer for json on stdout.
	out *printer
	// noBar leaves the progress line out, for pcd run handing its job to
	// a daemon: it prints what pcd run prints.
	noBar bool
}

// follow streams the jobs' callbacks until they are complete, and returns
// ErrJobFailed if any job did not succeed.
func follow(c *cli.Context, env Env, db *client, o followOptions) error {
	var bar *progress
	if !o.json && !o.noBar && isTerminal(env.Stderr) {
		bar = newProgress(env.Stderr, len(o.jobs) == 0)
	}
	out, flush, err := followPrinter(c, env, db, o.out, bar == nil)
	if err != nil {
		return err
	}
	defer flush()
	if !o.follow && !db.RunnerAlive(c.Context) {
		if unfinished, err := db.UnfinishedJobs(c.Context); err == nil && len(unfinished) > 0 {
			fmt.Fprintln(env.Stderr, "pcd: note: no daemon is running on this database; unfinished jobs wait until `pcd daemon` starts")
		}
	}
	outcomes := map[string]store.State{}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// mu keeps the events, the bar and the daemon notices apart.
	var mu sync.Mutex
	onEvent := func(ev engine.Event) error {
		mu.Lock()
		defer mu.Unlock()
		bar.clear()
		out.event(ev)
		if ev.Job != nil {
			outcomes[ev.JobID] = ev.Job.Outcome
		}
		bar.event(ev)
		return out.err
	}
	defer watchRunner(ctx, env, db, &mu, bar)()
	opts := engine.WatchOptions{Jobs: o.jobs, Follow: o.follow, After: o.after, OnEvent: onEvent, OnJobs: bar.jobs, Flush: flush,
		OnTrouble: func(err error) {
			bar.clear()
			if err != nil {
				fmt.Fprintf(env.Stderr, "pcd: cannot read the database (%v); retrying, from where the watch is\n", err)
			} else {
				fmt.Fprintln(env.Stderr, "pcd: reading the database again")
			}
		}}
	if o.json && bar == nil && !out.quiet {
		// Pass each record's JSON on as it is; decode only job events,
		// for the exit status.
		opts.OnCallback = func(cb store.Callback) error {
			if cb.Event == store.EventJob {
				ev, err := engine.EventFromCallback(cb)
				if err != nil {
					return err
				}
				return onEvent(ev)
			}
			out.callback(cb)
			return out.err
		}
	}
	err = db.Watch(ctx, opts)
	if out.order != nil {
		out.order.flush(out.task)
	}
	bar.finish()
	if ctx.Err() != nil && c.Context.Err() == nil {
		return ErrInterrupted
	}
	if err != nil {
		return err
	}
	return jobsFailed(outcomes)
}

// followPrinter is the printer of a follow: out if given, else a new one,
// buffered unless a progress bar shares the terminal (buffer), and its
// flush.
func followPrinter(c *cli.Context, env Env, db *client, out *printer, buffer bool) (*printer, func() error, error) {
	if out != nil {
		return out, func() error { return nil }, nil
	}
	out, err := newPrinter(c, env, db)
	if err != nil || !buffer {
		return out, func() error { return nil }, err
	}
	// Buffered, and flushed after each catch-up: a write per line could
	// not keep up with a runner committing 100k callbacks a second.
	// (Under a progress bar, lines go out one by one, so they never land
	// in the middle of it.)
	w := bufio.NewWriterSize(env.Stdout, 64<<10)
	out.w = w
	return out, w.Flush, nil
}

// jobsFailed is ErrJobFailed if a job did not succeed.
func jobsFailed(outcomes map[string]store.State) error {
	failed := 0
	for _, state := range outcomes {
		if state != store.Succeeded {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%w: %d of %s did not succeed", ErrJobFailed, failed, plural(len(outcomes), "job"))
	}
	return nil
}

// runnerCheck is how often a watch looks whether a daemon still runs.
const runnerCheck = time.Second

// watchRunner says on stderr when the database's daemon stops while a
// watch waits for its jobs, and when one is back, until the returned
// function is called.
func watchRunner(ctx context.Context, env Env, db *client, mu *sync.Mutex, bar *progress) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		alive := db.RunnerAlive(ctx)
		tick := time.NewTicker(runnerCheck)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			now := db.RunnerAlive(ctx)
			if now == alive || ctx.Err() != nil {
				continue
			}
			alive = now
			mu.Lock()
			bar.clear()
			if alive {
				fmt.Fprintln(env.Stderr, "pcd: a daemon runs the jobs again")
			} else {
				fmt.Fprintln(env.Stderr, "pcd: the daemon is gone: the jobs wait until `pcd daemon` runs again (this watch goes on)")
			}
			mu.Unlock()
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
