package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/pcd-dev/pcd/store"
)

// Client is the one object a program, pcd's commands and its HTTP server
// use to run jobs and to manage them. It is built from a store and a
// RunnerConfig (the registry of task kinds, the logger, the limits):
//
//	c := engine.NewClient(db, engine.RunnerConfig{Config: engine.Config{Registry: reg}})
//	job, err := c.Submit(ctx, jf) // any process
//	err = c.Start(ctx)            // the one that runs the database's jobs
//	...
//	c.Stop(ctx)                   // soft stop; hard once ctx ends
//	c.Close()
//
// Every operation that changes a job wakes the database's runners itself.
// Jobs are named by their id as events carry it (Job.UUID), or a unique
// prefix of it. A Client is safe for concurrent use. It does not own db:
// close db after Close.
type Client struct {
	db  store.Store
	cfg RunnerConfig

	mu     sync.Mutex
	runner *Runner
	ran    chan error // the background Run's end, after Start of a daemon
}

// NewClient makes a Client of db. It opens nothing: Start (or Run, or
// RunJob) makes it the runner of the database; the other operations
// work without.
func NewClient(db store.Store, cfg RunnerConfig) *Client {
	if cfg.Registry == nil {
		cfg.Registry = NewRegistry()
	}
	return &Client{db: db, cfg: cfg}
}

// Registry is the client's registry of task kinds.
func (c *Client) Registry() *Registry { return c.cfg.Registry }

// Path names the client's database, for messages.
func (c *Client) Path() string { return c.db.Path() }

// SpoolDir is this host's spool directory of exec tasks' output
// (Config.SpoolDir), "" if it has none.
func (c *Client) SpoolDir() string { return c.cfg.SpoolDir }

// Open makes the client the runner of its database, without running
// anything yet: it takes the runner lock (another runner holding it is a
// *store.LockedError, or with OnLockWait a RoleRun client waits for
// another RoleRun runner), finishes the integrity check and recovers
// what a dead runner left (see OpenRunner). Run or RunJob then run.
// Opening an open client does nothing.
func (c *Client) Open(ctx context.Context) error {
	_, err := c.open(ctx)
	return err
}

// open becomes the runner of the database, once.
func (c *Client) open(ctx context.Context) (*Runner, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.runner != nil {
		return c.runner, nil
	}
	r, err := OpenRunner(ctx, c.db, c.cfg)
	if err != nil {
		return nil, err
	}
	c.runner = r
	return r, nil
}

// Start makes the client the runner of its database (Open), and a daemon
// client (RoleDaemon, the default) then runs every job in the background
// until Stop, which returns that run's error; a RoleRun client runs the
// jobs RunJob gives it.
func (c *Client) Start(ctx context.Context) error {
	r, err := c.open(ctx)
	if err != nil {
		return err
	}
	if c.cfg.withDefaults().Role != RoleDaemon {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ran != nil {
		return nil
	}
	c.ran = make(chan error, 1)
	go func() { c.ran <- r.Run(context.WithoutCancel(ctx)) }()
	return nil
}

// Run runs every job of the database in the foreground, as pcd daemon
// does, until Stop, or until ctx ends, which interrupts running tasks
// (they stay pending, with no attempt spent). The client must be a
// daemon (RoleDaemon); Run opens its runner if Start did not.
func (c *Client) Run(ctx context.Context) error {
	r, err := c.open(ctx)
	if err != nil {
		return err
	}
	return r.Run(ctx)
}

// RunJob runs one job in this process to its end, as pcd run does, and
// returns it finished. The client must be a RoleRun client; RunJob opens
// its runner if Start did not. A job stopped first (Stop, or ctx ended)
// is ErrStopped, its progress saved: RunJob again resumes it.
func (c *Client) RunJob(ctx context.Context, jobID string) (store.Job, error) {
	job, err := c.db.FindJob(ctx, jobID)
	if err != nil {
		return store.Job{}, err
	}
	r, err := c.open(ctx)
	if err != nil {
		return store.Job{}, err
	}
	return r.RunJob(ctx, job.ID)
}

// CanRun is ErrUnknownKind if the job has tasks of a kind the client's
// registry does not hold: its runner would leave them (see RunJob).
func (c *Client) CanRun(job store.Job) error { return knowsKinds(job, c.cfg.Registry) }

// Stop stops the client's runner softly: no new task starts, and the
// running ones finish. Once ctx ends it stops hard: running tasks are
// interrupted and stay pending, with no attempt spent. A daemon started
// by Start returns its error here.
func (c *Client) Stop(ctx context.Context) error {
	c.mu.Lock()
	r, ran := c.runner, c.ran
	c.mu.Unlock()
	if r == nil {
		return nil
	}
	err := r.Stop(ctx)
	if ran != nil {
		if runErr := <-ran; runErr != nil && !errors.Is(runErr, ErrRunnerStopped) {
			err = errors.Join(err, runErr)
		}
		ran <- nil // a second Stop finds it ended
	}
	return err
}

// Close stops the client's runner at once, if it has one, and releases
// the runner lock. It does not close the store.
func (c *Client) Close() error {
	c.mu.Lock()
	r := c.runner
	c.mu.Unlock()
	if r == nil {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	stopErr := c.Stop(ctx)
	return errors.Join(stopErr, r.Close())
}

// wake tells the database's runners that something changed; best effort:
// a runner also looks by itself every second.
func (c *Client) wake() { _ = c.db.Wake() }

// Submit validates jf as pcd submit does and creates its job, whole or
// not at all, then wakes the runners. A bad job is ErrBadJob and writes
// nothing. With a Key that an existing job has, it returns that job and
// store.ErrDuplicate.
func (c *Client) Submit(ctx context.Context, jf JobFile) (store.Job, error) {
	job, err := submit(ctx, c.db, c.cfg.Registry, jf)
	if err == nil {
		c.wake()
	}
	return job, err
}

// SubmitTx validates jf as Submit does and creates its job inside tx, a
// transaction the caller holds on the client's database, so that the job
// commits or rolls back with the caller's own writes: a *sql.Tx on the
// SQLite store (from a database/sql handle with driver "sqlite" on the
// same file), a pgx.Tx on the PostgreSQL store (on the same database and
// schema). The job must hold its tasks (no TasksFile). Nothing runs it
// until tx commits. On PostgreSQL the runners are woken by the commit
// itself; on SQLite a runner notices the job within a second.
func (c *Client) SubmitTx(ctx context.Context, tx any, jf JobFile) (store.Job, error) {
	return submitTx(ctx, c.db, tx, c.cfg.Registry, jf)
}

// SubmitStream creates a job from NDJSON tasks read from r, one
// {"kind": ..., "payload": ...} a line, committed in batches as they are
// read, so that runners start on the first while the rest still come
// (see StreamOptions). The runners are woken at each commit.
func (c *Client) SubmitStream(ctx context.Context, r io.Reader, opts StreamOptions) (store.Job, error) {
	if opts.Registry == nil {
		opts.Registry = c.cfg.Registry
	}
	onCommit := opts.OnCommit
	opts.OnCommit = func(j store.Job) {
		c.wake()
		if onCommit != nil {
			onCommit(j)
		}
	}
	if err := opts.Job.ValidateSettings(); err != nil {
		return store.Job{}, err
	}
	if err := CheckLimits(opts.Job.Limits); err != nil {
		return store.Job{}, badJob("%w", err)
	}
	nj := opts.Job.NewJob()
	var err error
	if nj.After, err = resolveAfter(ctx, c.db, opts.Job.After); err != nil {
		return store.Job{}, err
	}
	job, err := streamJob(ctx, c.db, r, nj, opts)
	if job.ID != 0 {
		c.wake()
	}
	return job, err
}

// ResolveJobs finds the jobs that refs name (ids or unique prefixes).
func (c *Client) ResolveJobs(ctx context.Context, refs []string) ([]store.Job, error) {
	jobs := make([]store.Job, 0, len(refs))
	for _, ref := range refs {
		j, err := c.db.FindJob(ctx, ref)
		if err != nil {
			return nil, err
		}
		jobs = append(jobs, j)
	}
	return jobs, nil
}

// Job finds a job by its id or a unique prefix of it.
func (c *Client) Job(ctx context.Context, jobID string) (store.Job, error) {
	return c.db.FindJob(ctx, jobID)
}

// Jobs lists the jobs that f selects, newest first.
func (c *Client) Jobs(ctx context.Context, f store.JobFilter) ([]store.Job, error) {
	return c.db.ListJobs(ctx, f)
}

// TaskFilter selects a page of a job's tasks for Tasks: those in State
// (any if empty) after the task numbered After, at most Limit of them
// (every one if 0).
type TaskFilter struct {
	State store.State
	After int64
	Limit int
}

// JobOf is the job that a task read from the Client belongs to.
func (c *Client) JobOf(ctx context.Context, t store.TaskRow) (store.Job, error) {
	return c.db.Job(ctx, t.JobID)
}

// Tasks lists a job's tasks in their order, with their state.
func (c *Client) Tasks(ctx context.Context, jobID string, f TaskFilter) ([]store.TaskRow, error) {
	job, err := c.db.FindJob(ctx, jobID)
	if err != nil {
		return nil, err
	}
	if f.Limit <= 0 && f.State == "" && f.After == 0 {
		return c.db.Tasks(ctx, job.ID)
	}
	if f.Limit <= 0 {
		f.Limit = int(job.Total) + 1
	}
	return c.db.TasksInState(ctx, job.ID, f.State, f.After, f.Limit)
}

// Task finds a task by its id or a unique prefix of it.
func (c *Client) Task(ctx context.Context, taskID string) (store.TaskRow, error) {
	return c.db.FindTask(ctx, taskID)
}

// taskNumber finds a job's task by its number in the job, from 1.
func (c *Client) TaskNumber(ctx context.Context, jobID string, n int64) (store.TaskRow, error) {
	job, err := c.db.FindJob(ctx, jobID)
	if err != nil {
		return store.TaskRow{}, err
	}
	return taskNumber(ctx, c.db, job, n)
}

// Cancel cancels a job: every unfinished task is cancelled, with its
// task callback, and the job finishes cancelled (or failed, if a task
// failed), with its job callback, in one transaction. If a live runner
// was running the job, Cancel returns once that runner has stopped the
// job's tasks and released its callbacks: no task of the job starts
// after Cancel returns. If ctx ends first, the job is cancelled all the
// same and the error is ErrStopPending: the runner stops the tasks when
// it next looks, and their results are ignored. A finished job is
// store.ErrConflict.
func (c *Client) Cancel(ctx context.Context, jobID string) (store.Job, error) {
	job, err := c.db.FindJob(ctx, jobID)
	if err != nil {
		return store.Job{}, err
	}
	done, err := cancelJob(ctx, c.db, job.ID)
	if err != nil {
		return done, err
	}
	if job.State == store.Running && c.db.RunnerAlive(ctx) {
		if err := waitStopped(ctx, c.db, job.ID); err != nil {
			return done, fmt.Errorf("job %s is cancelled, its runner has not stopped its tasks yet (%w): %w", done.UUID, err, ErrStopPending)
		}
	}
	return done, nil
}

// ErrStopPending says that a job was cancelled, or a task killed, and its
// runner has not stopped its tasks yet.
var ErrStopPending = errors.New("the runner has not stopped the tasks yet")

// Retry opens a new round of a finished job: its failed and cancelled
// tasks go back to pending, keeping the attempts they spent, and the job
// gets a new job callback when the round ends. A job that is not
// finished, or has nothing to retry, is store.ErrConflict.
func (c *Client) Retry(ctx context.Context, jobID string) (store.Job, error) {
	job, err := c.db.FindJob(ctx, jobID)
	if err != nil {
		return store.Job{}, err
	}
	return retryJob(ctx, c.db, job.ID)
}

// Pause pauses jobs: their runners start no new task of them, and let
// the running ones finish. It says how many jobs it paused (a job paused
// already is not counted). A finished job is store.ErrConflict, and then
// no job is paused.
func (c *Client) Pause(ctx context.Context, jobIDs ...string) (int64, error) {
	return c.setPaused(ctx, jobIDs, true)
}

// Resume resumes paused jobs, and says how many it resumed.
func (c *Client) Resume(ctx context.Context, jobIDs ...string) (int64, error) {
	return c.setPaused(ctx, jobIDs, false)
}

// PauseAll pauses every unfinished job; ResumeAll resumes every one.
func (c *Client) PauseAll(ctx context.Context) (int64, error) { return c.pauseAll(ctx, true) }

// ResumeAll resumes every paused job.
func (c *Client) ResumeAll(ctx context.Context) (int64, error) { return c.pauseAll(ctx, false) }

func (c *Client) setPaused(ctx context.Context, jobIDs []string, paused bool) (int64, error) {
	if len(jobIDs) == 0 {
		return 0, nil
	}
	jobs, err := c.ResolveJobs(ctx, jobIDs)
	if err != nil {
		return 0, err
	}
	ids := make([]int64, len(jobs))
	for i, j := range jobs {
		if err := store.CanPause(j, paused); err != nil {
			return 0, err
		}
		ids[i] = j.ID
	}
	n, err := c.db.PauseJobs(ctx, ids, paused)
	if err == nil {
		c.wake()
	}
	return n, err
}

func (c *Client) pauseAll(ctx context.Context, paused bool) (int64, error) {
	n, err := c.db.PauseJobs(ctx, nil, paused)
	if err == nil {
		c.wake()
	}
	return n, err
}

// Kill asks the runner of a running task to stop it, as a timeout would:
// the task fails with "killed (pcd kill)", with no retry, or with requeue
// goes back to pending with no attempt spent. It returns the task once
// its runner has stopped it. If ctx ends first, the error is
// ErrStopPending: the runner stops it when it next looks. A task that is
// not running is store.ErrConflict.
func (c *Client) Kill(ctx context.Context, taskID string, requeue bool) (store.TaskRow, error) {
	t, err := c.db.FindTask(ctx, taskID)
	if err != nil {
		return store.TaskRow{}, err
	}
	return c.KillTask(ctx, t, requeue)
}

// KillTask is Kill of a task found already (Task, TaskNumber).
func (c *Client) KillTask(ctx context.Context, t store.TaskRow, requeue bool) (store.TaskRow, error) {
	if err := store.CanKill(t); err != nil {
		return t, err
	}
	if err := c.db.KillTask(ctx, t.JobID, t.Seq, requeue); err != nil {
		return t, err
	}
	c.wake()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		now, err := c.db.FindTask(ctx, t.UUID)
		if err != nil {
			return t, err
		}
		// A requeued task may be running again already: a new start.
		if now.State != store.Running || now.Attempts != t.Attempts || !now.StartedAt.Equal(t.StartedAt) {
			return now, nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return now, fmt.Errorf("task %d (%s) still runs (%w): %w", t.Seq, t.UUID, context.Cause(ctx), ErrStopPending)
		}
	}
}

// SetGroup sets a group's limits (0: none of its own), for every runner.
func (c *Client) SetGroup(ctx context.Context, g store.Group) error {
	if err := (Schedule{Group: g.Name}).Validate(); err != nil {
		return err
	}
	if g.MaxJobs < 0 || g.Workers < 0 || g.MaxJobs > maxGroupLimit || g.Workers > maxGroupLimit {
		return badJob("a group's max-jobs and workers must be between 0 and %d", maxGroupLimit)
	}
	lim := Limits{Memory: ByteSize(g.Memory), CPUs: g.CPUs}
	if err := lim.Validate(); err != nil {
		return badJob("%w", err)
	}
	if err := CheckLimits(lim); err != nil {
		return badJob("%w", err)
	}
	if err := c.db.SetGroup(ctx, g); err != nil {
		return err
	}
	c.wake()
	return nil
}

// maxGroupLimit bounds a group's limits.
const maxGroupLimit = 10_000

// Groups lists the groups that have limits.
func (c *Client) Groups(ctx context.Context) ([]store.Group, error) { return c.db.Groups(ctx) }

// subscribe calls fn with each callback of every job, after after (a
// callback id; 0 is from the first), in commit order, as each commits,
// until ctx ends or fn returns an error.
func (c *Client) Subscribe(ctx context.Context, after int64, fn func(Event) error) error {
	return subscribe(ctx, c.db, after, fn)
}

// watchCallbacks follows callbacks as opts says (some jobs, until they finish, or
// every job); see WatchOptions.
func (c *Client) Watch(ctx context.Context, opts WatchOptions) error {
	jobs, err := c.ResolveJobs(ctx, opts.Jobs)
	if err != nil {
		return err
	}
	opts.jobIDs = nil
	for _, j := range jobs {
		opts.jobIDs = append(opts.jobIDs, j.ID)
	}
	return watchCallbacks(ctx, c.db, opts)
}
