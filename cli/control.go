package cli

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/web"
)

// selectFlags choose the jobs of cancel, retry, pause and resume besides
// their ids.
func selectFlags(what string) []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "all", Usage: "every job " + what},
		&cli.StringFlag{Name: "state", Usage: "only jobs in this `STATE`, with --all"},
	}
}

// selectJobs finds the jobs a command names: its JOB_ID arguments, or
// with --all every job that ok accepts (in --state, if given).
func selectJobs(c *cli.Context, db *client, ok func(store.Job) bool) ([]store.Job, error) {
	state, err := parseState(c.String("state"))
	if err != nil {
		return nil, err
	}
	switch {
	case c.Bool("all") && c.NArg() > 0:
		return nil, usageError("give job ids or --all, not both")
	case !c.Bool("all") && c.NArg() == 0:
		return nil, usageError("give one or more job ids (unique prefixes are enough), or --all")
	case state != "" && !c.Bool("all"):
		return nil, usageError("--state goes with --all")
	}
	if !c.Bool("all") {
		var jobs []store.Job
		seen := map[string]bool{}
		for _, ref := range c.Args().Slice() {
			j, err := db.Job(c.Context, ref)
			if err != nil {
				return nil, err
			}
			if !seen[j.UUID] {
				seen[j.UUID] = true
				jobs = append(jobs, j)
			}
		}
		return jobs, nil
	}
	all, err := db.Jobs(c.Context, store.JobFilter{State: state, Limit: 1 << 30})
	if err != nil {
		return nil, err
	}
	var out []store.Job
	for i := len(all) - 1; i >= 0; i-- { // oldest first
		if ok(all[i]) {
			out = append(out, all[i])
		}
	}
	return out, nil
}

// eachJob runs fn on each selected job, goes on past a job it cannot act
// on, and returns the first error, after the others were tried.
func eachJob(env Env, jobs []store.Job, fn func(store.Job) error) error {
	var first error
	failed := 0
	for _, j := range jobs {
		if err := fn(j); err != nil {
			if len(jobs) > 1 {
				fmt.Fprintf(env.Stderr, "pcd: job %s: %s\n", j.UUID, ErrorLine(err))
			}
			if first == nil {
				first = err
			}
			failed++
		}
	}
	if first != nil && len(jobs) > 1 {
		return fmt.Errorf("%d of %d jobs: %w", failed, len(jobs), first)
	}
	if len(jobs) == 0 {
		fmt.Fprintln(env.Stderr, "pcd: no job matches")
	}
	return first
}

func cancelCommand(env Env) *cli.Command {
	return &cli.Command{
		Name:      "cancel",
		Usage:     "cancel jobs: pending tasks are cancelled, running ones stopped",
		ArgsUsage: "JOB_ID... | --all [--state pending|running]",
		Flags:     append(selectFlags("unfinished"), jsonFlag()),
		Description: `Cancels every unfinished task of each job, each with its task callback,
and completes the job as cancelled with its job callback, in one
transaction per job. A daemon running the job stops its running tasks at
once.`,
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			db, err := openDB(c, true)
			if err != nil {
				return err
			}
			defer db.Close()
			jobs, err := selectJobs(c, db, func(j store.Job) bool { return !j.Finished() })
			if err != nil {
				return err
			}
			return eachJob(env, jobs, func(j store.Job) error {
				// No task of the job may start once cancel returns: it
				// waits for the job's runner to stop them.
				done, err := cancelJob(c.Context, env, db, j)
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return writeJSON(env.Stdout, web.ViewJob(done))
				}
				_, err = fmt.Fprintf(env.Stdout, "cancelled job %s: %s cancelled, %d had finished\n",
					done.UUID, plural(done.Cancelled-j.Cancelled, "task"), j.Done())
				return err
			})
		},
	}
}

func retryCommand(env Env) *cli.Command {
	return &cli.Command{
		Name:      "retry",
		Usage:     "run finished jobs' failed and cancelled tasks again",
		ArgsUsage: "JOB_ID... | --all [--state failed|cancelled]",
		Flags:     append(selectFlags("that failed or was cancelled"), jsonFlag()),
		Description: `Puts the failed and cancelled tasks of each finished job back to pending;
the daemon runs them, and a new job callback follows when they are done.`,
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			db, err := openDB(c, true)
			if err != nil {
				return err
			}
			defer db.Close()
			jobs, err := selectJobs(c, db, func(j store.Job) bool { return j.Finished() && j.State != store.Succeeded })
			if err != nil {
				return err
			}
			retried := 0
			err = eachJob(env, jobs, func(j store.Job) error {
				again, err := db.Retry(c.Context, j.UUID)
				if err != nil {
					return err
				}
				retried++
				if c.Bool("json") {
					return writeJSON(env.Stdout, web.ViewJob(again))
				}
				_, err = fmt.Fprintf(env.Stdout, "job %s: %s back to pending (round %d)\n",
					again.UUID, plural(j.Failed+j.Cancelled, "task"), again.Round)
				return err
			})
			if retried > 0 && !db.RunnerAlive(c.Context) {
				fmt.Fprintln(env.Stderr, "pcd: note: no daemon is running on this database; `pcd daemon` runs the jobs, or `pcd run --resume JOB_ID`")
			}
			return err
		},
	}
}

func pauseCommand(env Env) *cli.Command  { return pauseOrResume(env, true) }
func resumeCommand(env Env) *cli.Command { return pauseOrResume(env, false) }

func pauseOrResume(env Env, pause bool) *cli.Command {
	name, usage, desc := "pause", "start no new task of jobs; running ones finish",
		`Pauses each job: its runner starts no new task, and lets the running ones
finish. A paused job stays paused across daemon restarts, until pcd
resume. With --all, every unfinished job is paused.`
	if !pause {
		name, usage, desc = "resume", "start the tasks of paused jobs again",
			`Resumes each paused job: the daemon runs it again as its turn comes.`
	}
	return &cli.Command{
		Name:         name,
		Usage:        usage,
		ArgsUsage:    "JOB_ID... | --all",
		Description:  desc,
		Flags:        []cli.Flag{&cli.BoolFlag{Name: "all", Usage: "every unfinished job"}, jsonFlag()},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if c.Bool("all") == (c.NArg() > 0) {
				return usageError("give one or more job ids (unique prefixes are enough), or --all")
			}
			db, err := openDB(c, true)
			if err != nil {
				return err
			}
			defer db.Close()
			change, all := db.Pause, db.PauseAll
			if !pause {
				change, all = db.Resume, db.ResumeAll
			}
			var n int64
			if c.Bool("all") {
				n, err = all(c.Context)
			} else {
				n, err = change(c.Context, c.Args().Slice()...)
			}
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return writeJSON(env.Stdout, map[string]any{name + "d": n})
			}
			verb := map[bool]string{true: "paused", false: "resumed"}[pause]
			_, err = fmt.Fprintf(env.Stdout, "%s %s\n", verb, plural(n, "job"))
			if err == nil && n == 0 && !c.Bool("all") {
				fmt.Fprintf(env.Stderr, "pcd: note: the jobs were %s already\n", verb)
			}
			return err
		},
	}
}

func groupCommand(env Env) *cli.Command {
	return &cli.Command{
		Name:  "group",
		Usage: "list groups, or set a group's limits",
		Description: `Groups are named queues with limits of their own, as in pueue. A job
joins one with pcd submit --group G; the default group has no name.

  pcd group                       list the groups with limits
  pcd group set G --max-jobs N    run at most N of G's jobs at once (per daemon)
  pcd group set G --workers N     run at most N of G's tasks at once (per daemon)
  pcd group set G --memory 4GiB   G's commands use at most 4 GiB together (per daemon)
  pcd group set G --cpus 2        G's commands use at most 2 CPUs together (per daemon)

0 is no limit of the group's own: --max-jobs of the daemon, and each job's
own --workers, --memory and --cpus, still hold. Memory and cpus limits need
Linux cgroups, as root; where a daemon cannot enforce them, the group's
commands fail and say why.`,
		Flags:        []cli.Flag{jsonFlag()},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageError("unknown group command %q: want pcd group, or pcd group set G", c.Args().First())
			}
			db, err := openReader(c)
			if errors.Is(err, store.ErrNoDatabase) && commonString(c, "db") == "" {
				return table(env.Stdout, groupHeader, nil)
			}
			if err != nil {
				return err
			}
			defer db.Close()
			groups, err := db.Groups(c.Context)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				type view struct {
					Name    string  `json:"name"`
					MaxJobs int     `json:"max_jobs"`
					Workers int     `json:"workers"`
					Memory  int64   `json:"memory"`
					CPUs    float64 `json:"cpus"`
				}
				out := []view{}
				for _, g := range groups {
					out = append(out, view{g.Name, g.MaxJobs, g.Workers, g.Memory, g.CPUs})
				}
				return writeJSON(env.Stdout, out)
			}
			rows := make([][]string, len(groups))
			for i, g := range groups {
				rows[i] = []string{groupName(g.Name), limit(g.MaxJobs), limit(g.Workers), memoryLimit(g.Memory), cpusLimit(g.CPUs)}
			}
			return table(env.Stdout, groupHeader, rows)
		},
		Subcommands: []*cli.Command{groupSetCommand(env)},
	}
}

// groupSetCommand is pcd group set.
func groupSetCommand(env Env) *cli.Command {
	return &cli.Command{
		Name:      "set",
		Usage:     "set a group's limits",
		ArgsUsage: "GROUP",
		Flags: append([]cli.Flag{
			&cli.IntFlag{Name: "max-jobs", Usage: "the group's jobs running at once per daemon (0: no limit of its own)"},
			&cli.IntFlag{Name: "workers", Usage: "the group's tasks running at once per daemon (0: no limit of its own)"},
			&cli.StringFlag{Name: "memory", Usage: "the most memory the group's commands use together per daemon: `SIZE` such as 4GiB (0: no limit of its own)"},
			&cli.Float64Flag{Name: "cpus", Usage: "the most CPUs' time the group's commands use together per daemon (0: no limit of its own)"},
		}, commonFlags()...),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageError("give one group name, got %d arguments", c.NArg())
			}
			g := store.Group{Name: c.Args().First(), MaxJobs: c.Int("max-jobs"), Workers: c.Int("workers"), CPUs: c.Float64("cpus")}
			if c.IsSet("memory") && c.String("memory") != "0" {
				size, err := engine.ParseByteSize(c.String("memory"))
				if err != nil {
					return usageError("--memory: %w", err)
				}
				g.Memory = int64(size)
			}
			lim := engine.Limits{Memory: engine.ByteSize(g.Memory), CPUs: g.CPUs}
			if err := lim.Validate(); err != nil {
				return usageError("%w", err)
			}
			if err := engine.CheckLimits(lim); err != nil {
				return usageError("--memory and --cpus: %w", err)
			}
			if err := (engine.Schedule{Group: g.Name}).Validate(); err != nil {
				return usageError("%w", err)
			}
			if g.MaxJobs < 0 || g.Workers < 0 || g.MaxJobs > maxWorkers || g.Workers > maxWorkers {
				return usageError("--max-jobs and --workers must be between 0 and %d", maxWorkers)
			}
			if !c.IsSet("max-jobs") && !c.IsSet("workers") && !c.IsSet("memory") && !c.IsSet("cpus") {
				return usageError("give --max-jobs N, --workers N, --memory SIZE or --cpus N")
			}
			db, err := openDB(c, false)
			if err != nil {
				return err
			}
			defer db.Close()
			if old, err := db.Groups(c.Context); err == nil {
				for _, o := range old {
					if o.Name == g.Name && !c.IsSet("max-jobs") {
						g.MaxJobs = o.MaxJobs
					}
					if o.Name == g.Name && !c.IsSet("workers") {
						g.Workers = o.Workers
					}
					if o.Name == g.Name && !c.IsSet("memory") {
						g.Memory = o.Memory
					}
					if o.Name == g.Name && !c.IsSet("cpus") {
						g.CPUs = o.CPUs
					}
				}
			}
			if err := db.SetGroup(c.Context, g); err != nil {
				return err
			}
			_, err = fmt.Fprintf(env.Stdout, "group %s: max-jobs %s, workers %s, memory %s, cpus %s\n", groupName(g.Name),
				limit(g.MaxJobs), limit(g.Workers), memoryLimit(g.Memory), cpusLimit(g.CPUs))
			return err
		},
	}
}

// groupHeader heads pcd group's table.
const groupHeader = "GROUP\tMAX_JOBS\tWORKERS\tMEMORY\tCPUS"

func memoryLimit(n int64) string {
	if n == 0 {
		return "-"
	}
	return engine.ByteSize(n).String()
}

func cpusLimit(n float64) string {
	if n == 0 {
		return "-"
	}
	return strconv.FormatFloat(n, 'f', -1, 64)
}

func groupName(g string) string {
	if g == "" {
		return "(default)"
	}
	return printable(g)
}

func limit(n int) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprint(n)
}

func killCommand(env Env) *cli.Command {
	return &cli.Command{
		Name:      "kill",
		Usage:     "stop one running task: it fails, or goes back to pending with --requeue",
		ArgsUsage: "TASK_ID | JOB_ID N",
		Description: `Asks the task's runner to stop it, as a timeout would: an exec task's
process group gets SIGTERM, then SIGKILL after the grace. The task fails
with "killed (pcd kill)", with no retry; with --requeue it goes back to
pending with no attempt spent, and runs again. The rest of the job goes
on. pcd kill waits (up to --wait) until the runner has stopped it.`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "requeue", Usage: "put the task back to pending instead of failing it"},
			&cli.DurationFlag{Name: "wait", Value: 30 * time.Second, Usage: "how long to wait for the runner to stop the task"},
		},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			db, err := openDB(c, true)
			if err != nil {
				return err
			}
			defer db.Close()
			t, err := findTask(c, db)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeoutCause(c.Context, c.Duration("wait"), fmt.Errorf("after %v", c.Duration("wait")))
			defer cancel()
			now, err := db.KillTask(ctx, t, c.Bool("requeue"))
			if errors.Is(err, engine.ErrStopPending) && c.Context.Err() == nil {
				return fmt.Errorf("task %d (%s) still runs after %v; its runner stops it when it next looks: %w",
					t.Seq, t.UUID, c.Duration("wait"), ErrInterrupted)
			}
			if err != nil {
				return err
			}
			verb := "killed: " + string(now.State)
			if c.Bool("requeue") {
				verb = "stopped; back to " + string(now.State)
			}
			_, err = fmt.Fprintf(env.Stdout, "task %d (%s) %s\n", t.Seq, t.UUID, verb)
			return err
		},
	}
}
