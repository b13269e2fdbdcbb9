package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/store"
)

func logsCommand(env Env) *cli.Command {
	return &cli.Command{
		Name:      "logs",
		Usage:     "print a task's captured output",
		ArgsUsage: "TASK_ID | JOB_ID [N]",
		Description: `Prints an exec task's output: its stdout to stdout and its stderr to
stderr. The database keeps the last --output-cap bytes of each; a longer
output, or one that is not text, is printed whole from its spool file
while that exists (on the host that ran the task, until the job is
pruned), and pcd logs says on stderr when it has only the last bytes.
For other kinds it prints the task's JSON result. --json prints the
stored result. A task is named by its id (a unique prefix), or by its job
and its number in the job: pcd logs 3f2a9c1e 17. A job alone prints the
output of all its tasks, task by task, in their order.

--follow prints a running task's output as it comes, stdout and stderr
together, until the task ends (like pueue follow and tsp -t); for a task
not started yet it waits. It reads what the runner on this host writes:
a task that runs on another host shows its output when it ends. The exit
code is 1 if the task failed.`,
		Flags: []cli.Flag{
			jsonFlag(),
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "follow a running task's output until it ends"},
		},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			db, err := openReader(c)
			if err != nil {
				return err
			}
			defer db.Close()
			if c.NArg() == 1 {
				if job, ok := namesJob(c, db); ok {
					if c.Bool("follow") {
						return usageError("--follow follows one task: give the job's id and the task's number")
					}
					return printJobLogs(c, env, db, job)
				}
			}
			t, err := findTask(c, db)
			if err != nil {
				return err
			}
			if c.Bool("follow") && !c.Bool("json") {
				return followLogs(c, env, db, t)
			}
			return printResult(c, env, db, t)
		},
	}
}

// namesJob says whether the one argument names a job, not a task.
func namesJob(c *cli.Context, db *client) (store.Job, bool) {
	ref := c.Args().First()
	if _, err := db.Task(c.Context, ref); !errors.Is(err, store.ErrNotFound) {
		return store.Job{}, false
	}
	job, err := db.Job(c.Context, ref)
	return job, err == nil
}

// printJobLogs prints the output of a job's tasks, task by task, in their
// order, and says how many have none yet.
func printJobLogs(c *cli.Context, env Env, db *client, job store.Job) error {
	var after, waiting int64
	for {
		tasks, err := db.Tasks(c.Context, job.UUID, engine.TaskFilter{After: after, Limit: 500})
		if err != nil {
			return err
		}
		if len(tasks) == 0 {
			break
		}
		for _, t := range tasks {
			after = t.Seq
			if !t.State.Final() || len(t.Result) == 0 && t.Error == "" {
				waiting++
				continue
			}
			if err := printOne(c, env, db.SpoolDir(), job.UUID, t); err != nil {
				return err
			}
			if t.State != store.Succeeded {
				fmt.Fprintf(env.Stderr, "pcd: task %d of job %s %s: %s\n", t.Seq, shortID(job.UUID), t.State, printable(t.Error))
			}
		}
	}
	if waiting > 0 {
		fmt.Fprintf(env.Stderr, "pcd: %d of job %s's %s have no output yet\n", waiting, shortID(job.UUID), plural(job.Total, "task"))
	}
	return nil
}

// findTask finds the task that a command's arguments name: TASK_ID (a
// unique prefix of the task's id), or JOB_ID N.
func findTask(c *cli.Context, db *client) (store.TaskRow, error) {
	switch c.NArg() {
	case 1:
		return db.Task(c.Context, c.Args().First())
	case 2:
		n, err := strconv.ParseInt(c.Args().Get(1), 10, 64)
		if err != nil || n < 1 {
			return store.TaskRow{}, usageError("a task's number in its job is a whole number from 1, got %q", c.Args().Get(1))
		}
		job, err := db.Job(c.Context, c.Args().First())
		if err != nil {
			return store.TaskRow{}, err
		}
		return db.TaskNumber(c.Context, job.UUID, n)
	}
	return store.TaskRow{}, usageError("give a task id (a unique prefix is enough), or a job id and the task's number, got %d arguments", c.NArg())
}

// printResult prints a task's output, or its result.
func printResult(c *cli.Context, env Env, db *client, t store.TaskRow) error {
	job, err := db.JobOf(c.Context, t)
	if err != nil {
		return err
	}
	return printOne(c, env, db.SpoolDir(), job.UUID, t)
}

// printOne prints the output of task t of job jobID, or its result.
func printOne(c *cli.Context, env Env, spool, jobID string, t store.TaskRow) error {
	if c.Bool("json") || t.Kind != "exec" {
		if len(t.Result) == 0 {
			if t.State.Final() {
				fmt.Fprintf(env.Stderr, "pcd: task %s %s with no result\n", t.UUID, t.State)
			} else {
				fmt.Fprintf(env.Stderr, "pcd: task %s is %s: no output yet (pcd logs --follow waits for it)\n", t.UUID, t.State)
			}
			return nil
		}
		_, err := fmt.Fprintf(env.Stdout, "%s\n", t.Result)
		return err
	}
	if len(t.Result) == 0 {
		if t.State.Final() {
			fmt.Fprintf(env.Stderr, "pcd: task %s %s with no output: %s\n", t.UUID, t.State, printable(t.Error))
		} else {
			fmt.Fprintf(env.Stderr, "pcd: task %s is %s: no output yet (pcd logs --follow waits for it)\n", t.UUID, t.State)
		}
		return nil
	}
	var res engine.ExecResult
	if err := json.Unmarshal(t.Result, &res); err != nil {
		return fmt.Errorf("task %s: stored result: %w", t.UUID, err)
	}
	return printLogs(env, spool, jobID, t, res)
}

func printLogs(env Env, spool, jobID string, t store.TaskRow, res engine.ExecResult) error {
	outCut, err := writeStream(env.Stdout, spool, jobID, t.UUID, "stdout", res.Stdout, res.StdoutSpooled)
	if err != nil {
		return err
	}
	errCut, err := writeStream(env.Stderr, spool, jobID, t.UUID, "stderr", res.Stderr, res.StderrSpooled)
	if err != nil {
		return err
	}
	for _, cut := range append([]string{outCut, errCut}, res.Cuts()...) {
		if cut != "" {
			fmt.Fprintf(env.Stderr, "pcd: note: task %s's %s\n", t.UUID, cut)
		}
	}
	return nil
}

// followPoll is how often pcd logs --follow looks for new output, and
// followStatePoll how often it reads the task's state.
const (
	followPoll      = 50 * time.Millisecond
	followStatePoll = 250 * time.Millisecond
)

// followLogs prints a task's live output until the task is final, then
// says how it ended.
func followLogs(c *cli.Context, env Env, db *client, t store.TaskRow) error {
	if t.State.Final() {
		if err := printResult(c, env, db, t); err != nil {
			return err
		}
		return taskEnded(t)
	}
	if t.Kind != "exec" {
		fmt.Fprintf(env.Stderr, "pcd: task %s is a %s task: it has no output to follow; waiting for its result\n", t.UUID, t.Kind)
	}
	path, _ := dbPath(c)
	dir, err := liveDir(path)
	if err != nil {
		return err
	}
	f := &liveFollower{env: env, dir: dir, id: t.UUID}
	defer f.close()
	var lastState time.Time
	noted := false
	for {
		f.read()
		if f.err != nil {
			return fmt.Errorf("write output: %w", f.err)
		}
		if time.Since(lastState) >= followStatePoll {
			lastState = time.Now()
			now, err := db.Task(c.Context, t.UUID)
			if err != nil {
				return err
			}
			if now.State.Final() {
				f.read() // what the command wrote before it ended
				if !f.seen && t.Kind == "exec" {
					if err := printResult(c, env, db, now); err != nil {
						return err
					}
				}
				return taskEnded(now)
			}
			if !noted && f.file == nil && now.State == store.Running && t.Kind == "exec" && time.Since(now.StartedAt) > 2*time.Second {
				fmt.Fprintf(env.Stderr, "pcd: task %s runs, but not on this host (or under another user): its output shows when it ends\n", t.UUID)
				noted = true
			}
		}
		select {
		case <-c.Context.Done():
			return c.Context.Err()
		case <-time.After(followPoll):
		}
	}
}

// taskEnded is how a followed task's end becomes the exit status.
func taskEnded(t store.TaskRow) error {
	if t.State == store.Succeeded {
		return nil
	}
	return taskFailed{t}
}

// taskFailed reports a followed task that did not succeed (exit 1).
type taskFailed struct{ t store.TaskRow }

func (e taskFailed) Error() string {
	why := e.t.Error
	if why == "" {
		why = string(e.t.State)
	}
	return fmt.Sprintf("task %d (%s) %s: %s", e.t.Seq, e.t.UUID, e.t.State, printable(why))
}
func (e taskFailed) Is(target error) bool { return target == ErrJobFailed }

// liveFollower reads a task's live output file as the runner writes it.
// It keeps the file open: when the command ends the runner removes it,
// and the follower still reads it to its end.
type liveFollower struct {
	env  Env
	dir  string
	id   string
	file *os.File
	off  int64
	seen bool // some live output was found
	buf  []byte
	err  error
}

func (f *liveFollower) read() {
	if f.file == nil && !f.open() {
		return
	}
	// Gone before this read: the attempt ended, and the read below gets
	// all it wrote. The next attempt (a retry) has a new file.
	_, err := os.Stat(f.file.Name())
	gone := errors.Is(err, os.ErrNotExist)
	if f.buf == nil {
		f.buf = make([]byte, 64<<10)
	}
	for f.err == nil {
		if fi, err := f.file.Stat(); err == nil && fi.Size() < f.off {
			fmt.Fprintln(f.env.Stderr, "pcd: note: the output started over (it passed the live output cap of 8 MiB)")
			f.off = 0
		}
		n, _ := f.file.ReadAt(f.buf, f.off)
		if n == 0 {
			break
		}
		_, f.err = f.env.Stdout.Write(f.buf[:n])
		f.off += int64(n)
	}
	if gone {
		f.close()
	}
}

func (f *liveFollower) open() bool {
	files := engine.LiveFiles(f.dir, f.id)
	if len(files) == 0 {
		return false
	}
	var newest string
	var at time.Time
	for _, p := range files {
		if fi, err := os.Stat(p); err == nil && !fi.ModTime().Before(at) {
			newest, at = p, fi.ModTime()
		}
	}
	file, err := os.Open(newest)
	if err != nil {
		return false
	}
	f.file, f.off, f.seen = file, 0, true
	return true
}

func (f *liveFollower) close() {
	if f.file != nil {
		f.file.Close()
		f.file = nil
	}
}
