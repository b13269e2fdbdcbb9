package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pcd-dev/pcd/internal/failpoint"
	"github.com/pcd-dev/pcd/internal/notify"
	"github.com/pcd-dev/pcd/store"
)

// ErrStopped is returned by Run when the job was stopped before it finished.
// Its tasks that did not finish stay pending, and a later Run resumes it.
var ErrStopped = errors.New("job stopped before it finished")

// ErrLeaseLost is the cause of a stop when the runner lost its lease on a
// shared database (PostgreSQL): no heartbeat landed in time, so other
// runners may take its tasks over. A daemon rejoins as a new runner; a
// RunJob returns it (wrapped with ErrStopped).
var ErrLeaseLost = errors.New("lost the runner's lease on the database: no heartbeat landed in time")

// errOthersRun is a job run's end when every task this runner could
// claim is done and other runners hold the rest.
var errOthersRun = errors.New("the job's other tasks are other runners'")

// Defaults from the classic producer-consumer lesson.
const (
	// DefaultMaxBatch caps how many results one group commit writes. A
	// batch only grows while the completer is busy: one fsync per 4096
	// no-ops ran 1M of them 10-20 % faster than one per 1024.
	DefaultMaxBatch = 4096
)

// Config configures a JobController.
type Config struct {
	Registry *Registry    // default NewRegistry()
	Logger   *slog.Logger // default discards
	Clock    Clock        // default SystemClock()
	// OnEvent receives each callback after its record commits, in the
	// order of the records. It runs on the completer's goroutine.
	OnEvent func(Event)
	// OnGroupCommit, if set, hears of each group commit: how many results
	// and start marks it wrote, and how long it took (for metrics).
	OnGroupCommit func(results, starts int, took time.Duration)
	// OnCallbacks, if set, receives the callback records each commit of
	// the runner wrote, in id order, once they are committed and before
	// their events are released: for a reader that passes them on (an
	// event stream) without reading them back. It runs on the completer's
	// goroutine, so it must be quick; the slice is the callee's to keep.
	// Callbacks other processes commit, and those of pcd cancel, do not
	// come through it.
	OnCallbacks func([]store.Callback)
	MaxBatch    int // default DefaultMaxBatch
	// PollEvery is how often the producer of an open job checks for new
	// tasks when it hears nothing; default 250ms.
	PollEvery time.Duration
	// SpoolDir is this host's spool directory of exec tasks' output (the
	// exec kind's, see SpoolPath): pruning a job removes its files.
	SpoolDir string

	// What the runner wires between its parts:
	//
	// wake is notified when tasks may have been added to a job that is
	// still open, or the job was cancelled elsewhere.
	wake *notify.Notifier
	// onCommit runs after each successful group commit.
	onCommit func()
	// released is shared by the controllers of one process so that a
	// retried run does not release a callback twice.
	released *releaseMemo
	// foreground: the job runs for one caller (RunJob) who hears of its
	// end through its callback, so a halt is logged at debug level only.
	foreground bool
	// deferMarks leaves a finished job's last release mark in released
	// for a later commit to record; the daemon flushes them.
	deferMarks bool
	// groupSlots, if set, bounds the tasks running at once across the
	// jobs of the job's group in this runner (pcd group set --workers).
	groupSlots chan struct{}
	// limitGroup is the cgroup that holds the limits of the job's group
	// (pcd group set --memory, --cpus) for its commands together.
	limitGroup limitGroup
	// throughput counts the committed results for the database's
	// throughput counts (the dashboard's chart); nil counts nothing.
	throughput *throughput
	// trouble is the environment problem (a full disk, a held lock, an
	// unreachable server) the runner waits out: Logger tells it once.
	trouble *troubleLog
}

// JobController runs one job. Use it once.
type jobController struct {
	// finishedHere: this run committed the job's end.
	finishedHere atomic.Bool
	db           store.Store
	cfg          Config
	group        string // the job's group, for the daemon's limits
	// haltReason is set once the job's --halt policy is met (halt), by
	// a consumer as a task ends or by the completer as results commit,
	// before the pipeline ends; haltMu guards it while the pipeline runs.
	haltMu     sync.Mutex
	haltReason string
	// preHalt applies the policy to the outcomes as the consumers hand
	// them over, before they commit: at the first failure of a
	// --halt now,fail=1 job, no consumer starts another task.
	preHalt *halter
	// killable holds the cancel function of each running task, by seq,
	// for pcd kill.
	killable sync.Map

	drainOnce sync.Once
	drain     chan struct{}
	killOnce  sync.Once
	kill      chan struct{}
	retries   *retries
	frontier  *frontier
	// ahead is the lane of tasks that run before the queue's: those a
	// takeover put back (takeOverFrom), which the producer reads again
	// from takenFrom.
	ahead     chan store.Task
	takenFrom atomic.Int64
	// inHand counts the tasks the producer has queued that the consumers
	// have not done with: queued or running. On a database that several
	// runners share (shared), the producer claims only for workers free
	// of them.
	inHand  atomic.Int64
	doneN   atomic.Int64 // tasks the consumers were done with
	workers int
	shared  bool
	// onFinishing, if set, is called once when nothing of the job is left
	// to run here, only commits (see noteFinishing): a daemon then counts
	// the job out of its --max-jobs and starts the next, whose commits
	// share transactions with this one's last. passDone says the first
	// pass has queued the job's last task; rerun, that an outcome sent a
	// task back to pending (a retry, an interruption).
	onFinishing func()
	finishing   atomic.Bool
	passDone    atomic.Bool
	rerun       atomic.Bool

	// onProduce, when set by a test, sees each task the producer queues.
	onProduce func(store.Task)
}

// takeOverFrom tells the producer that a takeover put the job's tasks
// from seq on back to pending: it reads them again, and they run ahead of
// what is queued.
func (c *jobController) takeOverFrom(seq int64) {
	for {
		cur := c.takenFrom.Load()
		if cur != 0 && cur <= seq {
			break
		}
		if c.takenFrom.CompareAndSwap(cur, seq) {
			break
		}
	}
	c.retries.signal()
}

// NewJobController returns a controller for one run of a job.
func newJobController(db store.Store, cfg Config) *jobController {
	cfg = cfg.withDefaults()
	return &jobController{db: db, cfg: cfg, drain: make(chan struct{}), kill: make(chan struct{}), retries: newRetries()}
}

// withDefaults fills in what cfg leaves out.
func (cfg Config) withDefaults() Config {
	if cfg.Registry == nil {
		cfg.Registry = NewRegistry()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.trouble == nil {
		cfg.trouble = new(troubleLog)
		cfg.Logger = slog.New(troubleHandler{Handler: cfg.Logger.Handler(), t: cfg.trouble})
	}
	if cfg.Clock == nil {
		cfg.Clock = SystemClock()
	}
	if cfg.OnEvent == nil {
		cfg.OnEvent = func(Event) {}
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.wake == nil {
		cfg.wake = notify.New()
	}
	if cfg.PollEvery <= 0 {
		cfg.PollEvery = 250 * time.Millisecond
	}
	if cfg.onCommit == nil {
		cfg.onCommit = func() {}
	}
	if cfg.released == nil {
		cfg.released = newReleaseMemo()
	}
	return cfg
}

// Cancel interrupts the run at once, as cancelling Run's context does. It
// is safe to call more than once, and before Run.
func (c *jobController) Cancel() { c.killOnce.Do(func() { close(c.kill) }) }

// Drain stops starting tasks. Running tasks finish and are recorded, then
// Run returns ErrStopped. It is safe to call more than once, and before Run.
func (c *jobController) Drain() { c.drainOnce.Do(func() { close(c.drain) }) }

func (c *jobController) draining() bool {
	select {
	case <-c.drain:
		return true
	default:
		return false
	}
}

// Run runs the job until every task is final, then commits the job's
// completion and releases its callback. Cancelling ctx interrupts running
// tasks: they stay pending, with no attempt spent, and Run returns
// ErrStopped. Run returns only after every goroutine it started is done.
func (c *jobController) Run(ctx context.Context, jobID int64) (store.Job, error) {
	job, err := c.db.Job(ctx, jobID)
	if err != nil {
		return store.Job{}, err
	}
	return c.run(ctx, job)
}

// run is Run of a job just read.
func (c *jobController) run(ctx context.Context, job store.Job) (store.Job, error) {
	// Bookkeeping finishes even when ctx is cancelled.
	bg := context.WithoutCancel(ctx)
	// Callbacks committed by an earlier run but never delivered go first.
	// A job that never started, is not finished and was never retried has
	// none; a retried one may have those of a cancel no runner released.
	if !job.StartedAt.IsZero() || job.Done() > 0 || job.Finished() || job.Round > 0 {
		if err := c.redeliver(bg, job.ID); err != nil {
			return job, err
		}
	}
	if job.Finished() {
		return job, nil
	}
	if job.Halting != "" {
		// Halted by a runner that did not live to cancel the rest.
		h, _ := ParseHalt(job.Halt)
		c.halted(job, job.Halting, h.Now)
	}
	start := c.cfg.Clock.Mono()
	base := job.Elapsed
	elapsed := func() time.Duration { return base + c.cfg.Clock.Mono() - start }
	comp, err := c.pipeline(ctx, job, elapsed)
	if err != nil {
		// Best effort: if these fail too, the next run redelivers, which
		// at-least-once delivery allows.
		_ = c.db.StopJob(bg, job.ID, elapsed())
		_ = c.markReleased(bg, job.ID, comp.unreleased)
		return job, err
	}
	if comp.finished != nil {
		return *comp.finished, c.settle(bg)
	}
	if c.haltReason != "" && ctx.Err() == nil {
		// Halted: the running tasks have finished (soon) or were stopped
		// (now), and are recorded; the rest are cancelled, with the
		// reason.
		// Another runner of the job may have cancelled it first.
		if _, err := cancelJobBecause(bg, c.db, job.ID, c.haltReason); err != nil && !errors.Is(err, store.ErrConflict) {
			_ = c.db.StopJob(bg, job.ID, elapsed())
			return job, err
		}
		return c.finish(bg, job, elapsed(), comp, false)
	}
	return c.finish(bg, job, elapsed(), comp, (c.draining() && c.haltReason == "") || ctx.Err() != nil)
}

// noteFinishing calls onFinishing, once, when nothing of the job is left
// to run here: it is sealed and the producer has queued its last task,
// none is queued or running, none waits to retry, and no outcome sent one
// back. What is left is to commit the outcomes in hand and the job's end.
// Both the producer and the consumers call it after their own change, so
// the last of them sees the other's. Only a database with one runner:
// on a shared one a takeover can hand the job tasks again.
func (c *jobController) noteFinishing() {
	if c.onFinishing == nil || c.shared || !c.passDone.Load() || c.inHand.Load() != 0 || c.rerun.Load() || c.draining() {
		return
	}
	if waits, _ := c.retries.state(); waits {
		return
	}
	if c.finishing.CompareAndSwap(false, true) {
		c.onFinishing()
	}
}

// halted acts on the job's --halt policy, once it is met: no task of the
// job starts from now on; now also stops the running tasks, each recorded
// as cancelled with the attempt it ran and its time; soon lets them
// finish. Once they are recorded, Run cancels the tasks that never
// started. It acts once, whoever calls it first: a consumer as a task
// ends (noteOutcome), or the completer as results commit.
func (c *jobController) halted(job store.Job, reason string, now bool) {
	c.haltMu.Lock()
	first := c.haltReason == ""
	if first {
		c.haltReason = reason
	}
	c.haltMu.Unlock()
	if !first {
		return
	}
	level := slog.LevelInfo
	if c.cfg.foreground {
		level = slog.LevelDebug // its job callback says it
	}
	c.cfg.Logger.Log(context.Background(), level, "job "+reason, "job", job.UUID)
	c.Drain()
	if job.Halting == "" {
		// Recorded on every store alike: a runner that takes the job over
		// after a crash halts it too, and other runners of the job (on a
		// shared database) stop starting its tasks at the wake-up
		// (watchFinished).
		if err := c.db.HaltJob(context.Background(), job.ID, reason); err != nil {
			c.cfg.Logger.Warn("could not record that the job halted; other runners stop when it is cancelled", "job", job.UUID, "err", err)
		} else if c.db.Shared() {
			_ = c.db.Wake()
		}
	}
	if now {
		cause := haltCause{reason}
		c.killable.Range(func(_, stop any) bool {
			stop.(context.CancelCauseFunc)(cause)
			return true
		})
	}
}

// noteOutcome applies the halt policy to a task's final state as its
// consumer hands it over, ahead of its commit: the consumer then starts
// no other task, as GNU parallel starts none after the failure that meets
// --halt. Every outcome handed over is committed, or the run fails and
// the next one counts from what committed.
func (c *jobController) noteOutcome(job store.Job, state store.State) {
	c.haltMu.Lock()
	met := c.preHalt.count(state)
	var reason string
	var now bool
	if met {
		reason, now = c.preHalt.reason, c.preHalt.policy.Now
	}
	c.haltMu.Unlock()
	if met {
		c.halted(job, reason, now)
	}
}

// haltCause stops a running task when its job halts now.
type haltCause struct{ reason string }

func (h haltCause) Error() string { return "stopped: " + h.reason }

// pipeline runs the job's producer, consumers and completer until the
// queue is drained or ctx ends, and returns once every one of them has.
// The completer's first commit marks the job running; the one that makes
// its last task final finishes it (completer.finished).
func (c *jobController) pipeline(ctx context.Context, job store.Job, elapsed func() time.Duration) (*completer, error) {
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.watchFinished(runCtx, job.ID, cancel)
	}()
	// A sealed job's queue need hold no more than its tasks left: a
	// daemon draining one-task jobs would spend a tenth of its time
	// allocating queues of a hundred. Only a shared database takes tasks
	// over, into the lane ahead.
	queue := make(chan store.Task, queueSize(job))
	c.shared = c.db.Shared()
	if c.shared {
		c.ahead = make(chan store.Task, job.QueueSize)
	}
	c.workers = runWorkers(job)
	c.inHand.Store(0)
	c.frontier = newFrontier(job.DoneThrough)
	c.preHalt = newHalter(job)
	// Room for a whole group commit's worth of starts and results, so that
	// consumers keep running while the completer waits for its fsync and
	// the next batch is ready when it returns.
	batch := batchSize(job, c.cfg.MaxBatch)
	starts := make(chan startReq, batch)
	results := make(chan outcome, batch)

	var prodErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(queue)
		prodErr = c.produce(runCtx, job, queue)
	}()
	workers := c.workers
	slots := newRunSlots(workers)
	var consumers sync.WaitGroup
	for i := range workers {
		consumers.Add(1)
		go func() {
			defer consumers.Done()
			c.consume(runCtx, job, queue, starts, results, slots, i)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		consumers.Wait()
		close(results)
	}()

	comp := &completer{c: c, job: job, elapsed: elapsed, slots: slots, interrupted: runCtx.Done(),
		startedAt: c.cfg.Clock.Now(), halt: newHalter(job)}
	err := comp.run(context.WithoutCancel(ctx), starts, results, cancel)
	cancel(nil) // ends the kill watcher
	wg.Wait()
	if err == nil && !errors.Is(prodErr, context.Canceled) {
		err = prodErr
	}
	return comp, err
}

// finish finishes a job whose pipeline ended without a commit finishing
// it: the job is done now (its last results were already final), or it
// stopped (ErrStopped, its progress saved), or someone else finished it
// (pcd cancel), or, with nothing stopping it, other runners hold its
// last tasks (errOthersRun).
func (c *jobController) finish(ctx context.Context, job store.Job, elapsed time.Duration, comp *completer, stopped bool) (store.Job, error) {
	finished, cb, err := c.db.FinishJob(ctx, job.ID, elapsed, comp.unreleased, jobMessage)
	if cb != nil && err == nil && c.cfg.OnCallbacks != nil {
		c.cfg.OnCallbacks([]store.Callback{*cb})
	}
	if errors.Is(err, store.ErrNotDone) && !stopped {
		// Nothing stopped this run: the tasks left are other runners'
		// (PostgreSQL), and the commit of the last one finishes the job.
		if markErr := c.markReleased(ctx, job.ID, comp.unreleased); markErr != nil {
			return job, markErr
		}
		if now, err := c.db.Job(ctx, job.ID); err == nil {
			job = now
		}
		return job, errOthersRun
	}
	if errors.Is(err, store.ErrNotDone) {
		saveErr := c.db.StopJob(ctx, job.ID, elapsed)
		if markErr := c.markReleased(ctx, job.ID, comp.unreleased); markErr != nil {
			return job, markErr
		}
		c.cfg.Logger.Debug("job stopped", "job", job.UUID, "done", comp.done)
		if now, err := c.db.Job(ctx, job.ID); err == nil {
			job = now // the counts as they are now
		}
		return job, errors.Join(ErrStopped, saveErr)
	}
	if err != nil {
		return job, err
	}
	if cb == nil {
		// Finished by someone else, such as pcd cancel: deliver what they
		// committed.
		return finished, c.redeliver(ctx, job.ID)
	}
	c.cfg.onCommit()
	ev := jobEvent(finished)
	ev.CallbackID = cb.ID
	c.release(job.ID, ev)
	return finished, c.settle(ctx)
}

// settle records the marks of callbacks released, unless the daemon
// leaves them for a later commit.
func (c *jobController) settle(ctx context.Context) error {
	if c.cfg.deferMarks {
		return nil
	}
	return c.cfg.released.Flush(ctx, c.db)
}

// markReleased records the job's callbacks up to span.To delivered.
func (c *jobController) markReleased(ctx context.Context, jobID int64, span store.Span) error {
	if err := c.db.MarkReleased(ctx, jobID, span); err != nil {
		return err
	}
	c.cfg.released.recorded(store.Mark{JobID: jobID, To: span.To})
	return nil
}

// batchSize is the most a group commit of this job can hold: MaxBatch, or
// fewer for a sealed job with fewer tasks left (a small job must not pay
// for buffers sized for a million: 4,096 outcomes are a megabyte, and a
// daemon draining thousands of one-task jobs spent a third of its time
// allocating and collecting them). Retried tasks may bring more outcomes
// than tasks; the buffers only bound how far consumers run ahead.
func batchSize(job store.Job, maxBatch int) int {
	if !job.Sealed {
		return maxBatch
	}
	left := job.Total - job.Done() + int64(job.Workers)
	return int(max(min(int64(maxBatch), left), 1))
}

// queueSize is the room a run's queue needs: the job's queue size, or
// less for a sealed job with fewer tasks left. (Retries come back a page
// at a time, and a queue only bounds how far the producer runs ahead.)
func queueSize(job store.Job) int {
	if left := job.Total - job.Done(); job.Sealed && left < int64(job.QueueSize) {
		return int(max(left, 1))
	}
	return job.QueueSize
}

// runWorkers is how many consumers a run needs: the job's workers, or
// fewer for a sealed job with fewer tasks left to run.
func runWorkers(job store.Job) int {
	if left := job.Total - job.Done(); job.Sealed && left < int64(job.Workers) {
		return int(max(left, 1))
	}
	return job.Workers
}

// watchFinished cancels the run when Cancel is called, or when someone
// else finishes the job (pcd cancel): it looks at each wake-up, and every
// second in case one is lost.
func (c *jobController) watchFinished(ctx context.Context, jobID int64, cancel context.CancelCauseFunc) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		wake := c.cfg.wake.C()
		select {
		case <-c.kill:
			cancel(context.Canceled)
			return
		case <-ctx.Done():
			return
		case <-wake:
		case <-tick.C:
		}
		j, err := c.db.Job(ctx, jobID)
		switch {
		case err != nil:
		case j.Finished() && c.finishedHere.Load():
			return // this run's own commit finished it
		case j.Finished():
			c.cfg.Logger.Info("job finished elsewhere (cancelled); stopping its tasks", "job", j.UUID, "state", j.State)
			cancel(context.Canceled)
			return
		case j.Halting != "":
			// Another runner met the job's --halt policy.
			h, _ := ParseHalt(j.Halt)
			c.halted(j, j.Halting, h.Now)
		case j.Paused && !c.draining():
			c.cfg.Logger.Info("job paused: starting no new task; the running ones finish", "job", j.UUID)
			c.Drain()
		}
		c.applyKills(ctx, jobID)
	}
}

// applyKills stops the running tasks that pcd kill asked to stop.
func (c *jobController) applyKills(ctx context.Context, jobID int64) {
	kills, err := c.db.KillRequests(ctx, jobID)
	if err != nil {
		return
	}
	for seq, requeue := range kills {
		stop, ok := c.killable.Load(seq)
		if !ok {
			continue
		}
		cause := errKilled
		if requeue {
			cause = errRequeued
		}
		stop.(context.CancelCauseFunc)(cause)
	}
}

// release hands one callback to OnEvent, between the delivery failpoints.
func (c *jobController) release(jobID int64, ev Event) {
	failpoint.Hit(failpoint.BeforeDeliver)
	c.cfg.OnEvent(ev)
	failpoint.Hit(failpoint.AfterDeliver)
	c.cfg.released.mark(jobID, ev.CallbackID)
}

// redeliver releases the job's committed but undelivered callbacks.
func (c *jobController) redeliver(ctx context.Context, jobID int64) error {
	cbs, err := c.db.Callbacks(ctx, jobID, 0, true)
	if err != nil || len(cbs) == 0 {
		return err
	}
	for _, cb := range cbs {
		if c.cfg.released.seen(jobID, cb.ID) {
			continue // released by an earlier run of this process
		}
		ev, err := EventFromCallback(cb)
		if err != nil {
			return err
		}
		c.release(jobID, ev)
	}
	span := store.Span{From: cbs[0].ID, To: cbs[len(cbs)-1].ID}
	if err := c.markReleased(ctx, jobID, span); err != nil {
		return fmt.Errorf("redeliver: %w", err)
	}
	return nil
}
