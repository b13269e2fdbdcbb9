package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/mattn/go-isatty"
	"github.com/urfave/cli/v2"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/store"
)

func submitCommand(env Env) *cli.Command {
	return &cli.Command{
		Name:      "submit",
		Usage:     "write a job to the database for the daemon, and print its id",
		ArgsUsage: "FILE | - | --sleep N | --lines FILE | -- CMD ARGS...",
		Description: `Writes a job and prints its id alone on stdout, so that
  id=$(pcd submit job.json)
works. The job waits durably whether or not a daemon is running.

  pcd submit FILE      a job file, created whole in one transaction
  pcd submit -         NDJSON tasks from stdin, one {"kind":..,"payload":..} per
                       line, committed in batches while they are read, so the
                       daemon starts on them at once; the job is sealed at EOF
  pcd submit --sleep N N sleep tasks of 0-1 s, the demo
  pcd submit --lines F one shell command per line of F (- for stdin)
  pcd submit -- CMD A  one exec task running CMD A, with no shell`,
		Flags: []cli.Flag{
			sourceFlags()[0], sourceFlags()[1], sourceFlags()[2], sourceFlags()[3], sourceFlags()[4],
			retryFlags()[0], retryFlags()[1], retryFlags()[2], retryFlags()[3],
			limitFlags()[0], limitFlags()[1],
			sinkFlags()[0], sinkFlags()[1], sinkFlags()[2],
			&cli.StringFlag{Name: "name", Usage: "job name"},
			&cli.IntFlag{Name: "workers", Aliases: []string{"w", "j", "jobs"}, EnvVars: []string{"PCD_WORKERS"}, Value: engine.DefaultWorkers, Usage: "consumers running the job's tasks at once (parallel's -j)"},
			&cli.IntFlag{Name: "queue-size", Aliases: []string{"q"}, EnvVars: []string{"PCD_QUEUE_SIZE"}, Value: engine.DefaultQueueSize, Usage: "capacity of the job's in-memory queue"},
			&cli.BoolFlag{Name: "json", Usage: "print a JSON object instead of the bare id"},
			&cli.BoolFlag{Name: "wait", Usage: "follow the job like watch and exit with its outcome"},
			&cli.StringFlag{Name: "key", Usage: "idempotency `KEY`: if a job with this key exists, print its id instead of submitting again"},
			haltFlag(),
			scheduleFlags()[0], scheduleFlags()[1], scheduleFlags()[2], scheduleFlags()[3], scheduleFlags()[4], scheduleFlags()[5],
		},
		OnUsageError: onUsageError,
		Action:       func(c *cli.Context) error { return submit(c, env) },
	}
}

func submit(c *cli.Context, env Env) error {
	if c.IsSet("key") && strings.TrimSpace(c.String("key")) == "" {
		return usageError("--key is empty: give a key, or leave --key out")
	}
	jf, stream, err := jobSource(c, env, false)
	if err != nil {
		return err
	}
	if err := applyJobFlags(c, &jf); err != nil {
		return err
	}
	open := openDB
	if !stream && len(jf.Tasks) <= briefTasks {
		open = func(c *cli.Context, _ bool) (*client, error) { return openBrief(c) }
	}
	db, err := open(c, false)
	if err != nil {
		return err
	}
	defer db.Close()

	var job store.Job
	if stream {
		jf.Key = c.String("key")
		// Ctrl-C or SIGTERM ends the stream: the job is sealed at once with
		// the tasks that committed. (A SIGKILLed submitter's job is sealed by
		// the runner, which sees its lock go.)
		ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		if f, ok := env.Stdin.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			fmt.Fprintln(env.Stderr, `pcd: reading tasks from the terminal, one JSON object a line ({"kind": "exec", "payload": {"argv": ["echo", "hi"]}}); Ctrl-D ends the job, Ctrl-C stops it`)
		}
		job, err = db.SubmitStream(ctx, env.Stdin, engine.StreamOptions{Job: jf})
		if err != nil && ctx.Err() != nil && c.Context.Err() == nil {
			if job.UUID == "" {
				return fmt.Errorf("interrupted before any task committed; no job was created: %w", ErrInterrupted)
			}
			fmt.Fprintln(env.Stdout, job.UUID)
			return fmt.Errorf("interrupted: job %s is sealed with the %s that committed: %w", job.UUID, plural(job.Total, "task"), ErrInterrupted)
		}
		if err != nil {
			return fmt.Errorf("stdin: %w", err)
		}
	} else {
		jf.Key = c.String("key")
		job, err = db.Submit(c.Context, jf)
		if errors.Is(err, store.ErrDuplicate) {
			err = nil // idempotent: the job exists already
		}
		if err != nil {
			return err
		}
	}
	if c.Bool("json") {
		b, _ := json.Marshal(map[string]any{"job_id": job.UUID, "name": job.Name, "total": job.Total,
			"workers": job.Workers, "queue_size": job.QueueSize})
		fmt.Fprintf(env.Stdout, "%s\n", b)
	} else {
		fmt.Fprintln(env.Stdout, job.UUID)
	}
	if !c.Bool("wait") {
		if !db.RunnerAlive(c.Context) {
			fmt.Fprintf(env.Stderr, "pcd: note: no daemon is running on %s: the job waits until `pcd daemon` starts\n", db.Path())
		}
		return nil
	}
	return follow(c, env, db, followOptions{jobs: []string{job.UUID}, json: c.Bool("json")})
}

// briefTasks is the largest job a submit writes with a brief open (no
// whole-file check, no checkpoints of its own): a shell loop of one-command
// submits pays for neither, and a big job's WAL is still checkpointed as
// it is written.
const briefTasks = 1000

// readJobFile parses a job file, reporting problems as usage errors.
func readJobFile(path string, env Env) (engine.JobFile, error) {
	jf, err := engine.ReadJobFile(path, env.Registry)
	if errors.Is(err, engine.ErrBadJob) {
		return engine.JobFile{}, usageError("job file %s: %w", path, err)
	}
	if err != nil {
		return engine.JobFile{}, usageError("job file: %w", err)
	}
	return jf, nil
}
