package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/pcd-dev/pcd/engine/process"
	"github.com/pcd-dev/pcd/engine/sink"
	"github.com/pcd-dev/pcd/internal/notify"
	"github.com/pcd-dev/pcd/store"
)

// The roles a runner takes.
const (
	// RoleDaemon runs every job of the database until stopped.
	RoleDaemon = "daemon"
	// RoleRun runs one job (RunJob). A second one is refused, or waits
	// for the first (RunnerConfig.OnLockWait).
	RoleRun = "run"
)

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	Config
	// Role is RoleDaemon (the default) or RoleRun.
	Role string
	// MaxJobs is how many jobs a daemon runs at once, oldest first;
	// default 1.
	MaxJobs int
	// CheckEvery is how often a daemon looks for work when no wake-up
	// arrives; default 1s. Wake-ups normally arrive over the socket.
	CheckEvery time.Duration
	// RetryAfter is how long a daemon waits after a run failed (say, the
	// disk was full) before it runs jobs again; default 5s.
	RetryAfter time.Duration
	// Delivery sets the runner's own callback sinks and how deliveries
	// retry. A daemon delivers them for every job, RunJob for its job;
	// jobs' own sinks are delivered too.
	Delivery DeliveryConfig
	// Retain, if set, makes a daemon prune jobs that finished longer ago
	// than this, in the background (see Prune); zero keeps everything.
	Retain time.Duration
	// DeliveryWait is how long RunJob waits, once its job has finished,
	// for the job's hooks and webhooks before it leaves the rest to a
	// daemon, and how long a stopping daemon lets a delivery in flight
	// finish; default 5s.
	DeliveryWait time.Duration
	// OnLockWait, if set, makes OpenRunner of a RoleRun runner wait while
	// another RoleRun runner holds the lock (pcd run queues behind pcd
	// run), and is called once when it starts to wait. If nil, OpenRunner
	// refuses at once with the holder's *store.LockedError.
	OnLockWait func(holder *store.LockedError)
	// OnDeliveryWait, if set, is called once when RunJob has waited a
	// second for its job's deliveries.
	OnDeliveryWait func(wait time.Duration)
	// Subreaper makes the process a child subreaper while the runner is
	// open (see Subreaper), so that a task's descendant that leaves its
	// process group is killed with it, and, where the machine allows it,
	// starts the commands in a PID namespace of the runner's own, so that
	// the kernel kills what they started if the runner dies (see
	// process.Contain; the program must call RunFence). pcd sets it.
	// While it is set, the exec kind reaps every child that it did not
	// start: leave it off in a program that starts processes of its own.
	Subreaper bool
}

// Runner is what it takes to run a database's work, with one lifecycle:
//
//	r, err := OpenRunner(ctx, db, cfg) // lock, check, recover
//	go r.Run(ctx)                      // or r.RunJob(ctx, id)
//	r.Stop(ctx)                        // soft stop; hard once ctx ends
//	r.Close()                          // release everything
//
// One process at a time is the runner of a database (the runner lock).
// OpenRunner refuses with a *store.LockedError when another holds it.
type Runner struct {
	db  store.Store
	cfg RunnerConfig

	lock        store.Releaser
	stopReaping func()
	wake        io.Closer

	mu        sync.Mutex
	running   bool
	hardStop  context.CancelCauseFunc // of the running Run or RunJob
	done      chan struct{}           // closed when that returns
	drainOnce sync.Once
	drain     chan struct{}
	closed    bool
}

// ErrRunnerStopped is returned by Run and RunJob called after Stop or Close.
var ErrRunnerStopped = errors.New("the runner is stopped")

// OpenRunner becomes the runner of db. It takes the runner lock (another
// runner holding it is a *store.LockedError; with OnLockWait, a RoleRun
// runner waits for another RoleRun runner instead), finishes the integrity check that sqlite.Open
// left for later (a daemon does that in the background as it runs), makes
// this process the subreaper of its tasks' descendants, recovers what the
// last runner left (it kills the processes of its tasks, requeues or fails
// the interrupted tasks, deletes half-written jobs), and listens for
// wake-ups. A daemon waits out a full disk or a held write lock while it
// recovers, until ctx ends.
func OpenRunner(ctx context.Context, db store.Store, cfg RunnerConfig) (_ *Runner, err error) {
	cfg = cfg.withDefaults()
	r := &Runner{db: db, cfg: cfg, drain: make(chan struct{}), stopReaping: func() {}}
	defer func() {
		if err != nil {
			r.release()
		}
	}()
	if r.lock, err = r.acquire(ctx); err != nil {
		return nil, err
	}
	if cfg.Role == RoleRun && db.CheckDeferred() {
		// A single job finishes the check before it writes; a daemon
		// checks in the background (Run).
		if err := db.Check(ctx); err != nil {
			return nil, err
		}
	}
	if cfg.Subreaper {
		if r.stopReaping, err = process.BecomeSubreaper(); err != nil {
			cfg.Logger.Warn("descendants of tasks that leave their process group may outlive them", "err", err)
			err = nil
		}
		r.contain()
	}
	if err := r.recover(ctx); err != nil {
		return nil, err
	}
	if r.wake, err = db.ListenWake(cfg.wake.Notify); err != nil {
		if cfg.Role == RoleDaemon {
			cfg.Logger.Warn("no wake socket; new jobs are noticed by polling", "err", err, "every", cfg.CheckEvery)
		} else {
			cfg.Logger.Debug("no wake socket; a pcd cancel is noticed within a second", "err", err)
		}
		r.wake, err = nil, nil
	}
	return r, nil
}

// contain starts the runner's commands in a PID namespace of its own, where
// the machine allows it (process.Contain): the kernel then kills what they
// started when the runner dies, however it dies. Where it does not, it
// says so once; the next runner kills what is left instead.
func (r *Runner) contain() {
	stop, err := process.Contain()
	if err != nil {
		// Told once by a daemon; a pcd run, each time, only at debug
		// level: its user would read it at every run.
		level := slog.LevelInfo
		if r.cfg.Role == RoleRun {
			level = slog.LevelDebug
		}
		r.cfg.Logger.Log(context.Background(), level, "the processes tasks start are not contained: if this runner is killed, they live on until the next runner starts", "why", err)
		return
	}
	reaping := r.stopReaping
	r.stopReaping = func() {
		stop()
		reaping()
	}
}

func (cfg RunnerConfig) withDefaults() RunnerConfig {
	if cfg.Role == "" {
		cfg.Role = RoleDaemon
	}
	if cfg.MaxJobs <= 0 {
		cfg.MaxJobs = 1
	}
	if cfg.CheckEvery <= 0 {
		cfg.CheckEvery = time.Second
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = 5 * time.Second
	}
	if cfg.DeliveryWait <= 0 {
		cfg.DeliveryWait = 5 * time.Second
	}
	if cfg.wake == nil {
		cfg.wake = notify.New()
	}
	if cfg.throughput == nil {
		cfg.throughput = newThroughput()
	}
	cfg.Config = cfg.Config.withDefaults()
	if cfg.Delivery.Wake == nil {
		cfg.Delivery.Wake = notify.New()
	}
	if cfg.Delivery.Logger == nil {
		cfg.Delivery.Logger = cfg.Logger
	} else if _, ok := cfg.Delivery.Logger.Handler().(troubleHandler); !ok {
		// An outage the sinks notice is the one the jobs notice: told once.
		cfg.Delivery.Logger = slog.New(troubleHandler{Handler: cfg.Delivery.Logger.Handler(), t: cfg.trouble})
	}
	return cfg
}

// acquire takes the runner lock for the runner's role.
func (r *Runner) acquire(ctx context.Context) (store.Releaser, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	said := false
	for {
		lock, err := r.db.LockRunner(r.cfg.Role)
		var held *store.LockedError
		if r.cfg.Role != RoleRun || r.cfg.OnLockWait == nil || !errors.As(err, &held) || held.Role == RoleDaemon {
			return lock, err
		}
		// Another pcd run runs only its own job: wait for it.
		if !said {
			r.cfg.OnLockWait(held)
		}
		said = true
		select {
		case <-tick.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// recover runs Recover; a daemon retries while the disk is full or
// another process holds the write lock.
func (r *Runner) recover(ctx context.Context) error {
	trouble := r.cfg.trouble
	for {
		_, err := recoverRunner(ctx, r.db, r.cfg.Logger)
		if err == nil {
			trouble.over(r.cfg.Logger)
			return nil
		}
		if r.cfg.Role != RoleDaemon || (!errors.Is(err, store.ErrDiskFull) && !store.Temporary(err)) {
			return err
		}
		wait := trouble.report(r.cfg.Logger, r.db.Path(), store.Job{}, err, r.cfg.RetryAfter)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// begin marks the runner running, with its hard stop; false after Stop.
func (r *Runner) begin(cancel context.CancelCauseFunc) (chan struct{}, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.stopping() {
		return nil, ErrRunnerStopped
	}
	if r.running {
		return nil, errors.New("the runner is running already")
	}
	r.running, r.hardStop, r.done = true, cancel, make(chan struct{})
	return r.done, nil
}

func (r *Runner) end(done chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.running, r.hardStop = false, nil
	close(done)
}

func (r *Runner) stopping() bool {
	select {
	case <-r.drain:
		return true
	default:
		return false
	}
}

// Run runs every job of the database (RoleDaemon), oldest first, MaxJobs
// at a time, and delivers callbacks, until Stop, or until ctx ends, which
// interrupts running tasks at once (they stay pending, with no attempt
// spent). Every goroutine it starts has ended when it returns.
func (r *Runner) Run(ctx context.Context) error {
	if r.cfg.Role != RoleDaemon {
		return fmt.Errorf("Run needs a %s runner, this one is a %s runner", RoleDaemon, r.cfg.Role)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done, err := r.begin(cancel)
	if err != nil {
		return err
	}
	defer r.end(done)
	defer r.keepThroughput(ctx)()
	for {
		runCtx, stopRun := context.WithCancelCause(ctx)
		fenced, unwatch := r.watchLease(runCtx, stopRun)
		err := newDaemon(r.db, r.cfg, r.drain).run(fenced)
		unwatch()
		lost := errors.Is(context.Cause(runCtx), ErrLeaseLost)
		stopRun(nil)
		if !lost || ctx.Err() != nil || r.stopping() {
			return err
		}
		if err := r.rejoin(ctx); err != nil || r.lock == nil {
			return err // or stopped before it could rejoin
		}
	}
}

// watchLease stops a run (with ErrLeaseLost) if the runner loses its
// lease on a shared database, and starts the runner's fence (see
// RunFence), which the returned context carries to the exec kind;
// unwatch ends both, once the run's tasks have stopped.
func (r *Runner) watchLease(ctx context.Context, stop context.CancelCauseFunc) (_ context.Context, unwatch func()) {
	leased, ok := r.lock.(store.Leased)
	if !ok {
		return ctx, func() {}
	}
	f := process.StartFence(ctx, leased, r.cfg.Logger)
	ctx = process.WithFence(ctx, f)
	end, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-leased.Lost():
			r.cfg.Logger.Error("lost the lease on the database (no heartbeat landed in time: is the server reachable?): "+
				"stopped this runner's tasks; other runners take them over", "db", r.db.Path())
			stop(ErrLeaseLost)
		case <-ctx.Done():
		case <-end:
		}
	}()
	return ctx, func() {
		close(end)
		<-done
		f.Stop()
	}
}

// rejoin makes a runner that lost its lease a runner again, as a new one,
// once the database can be reached: it registers, then takes over what
// its old self left, as it would a dead runner's. Stopped first, it
// returns nil with no lock held.
func (r *Runner) rejoin(ctx context.Context) error {
	_ = r.lock.Release() // best effort: the old lease is gone either way
	r.lock = nil
	wait := r.cfg.RetryAfter / 16
	for {
		lock, err := r.db.LockRunner(r.cfg.Role)
		if err == nil {
			r.lock = lock
			break
		}
		if !store.Temporary(err) {
			return err
		}
		r.cfg.Logger.Debug("rejoin the database", "err", err, "retry_in", wait)
		select {
		case <-time.After(wait):
		case <-r.drain:
			return nil
		case <-ctx.Done():
			return nil
		}
		wait = min(2*wait, r.cfg.RetryAfter)
	}
	if err := r.recover(ctx); err != nil {
		return err
	}
	r.cfg.Logger.Info("rejoined the database as a new runner; running jobs again", "db", r.db.Path())
	return nil
}

// knowsKinds is ErrUnknownKind if an unfinished job has tasks of a kind
// reg does not hold: no runner of reg may take it.
func knowsKinds(job store.Job, reg *Registry) error {
	missing := store.MissingKinds(job.Kinds, reg.Names())
	if len(missing) == 0 || job.Finished() {
		return nil
	}
	return fmt.Errorf("job %s has tasks of %s, which this runner does not know (it knows %s); they are left as they were, for a runner that knows them: %w",
		job.UUID, kindList(missing), strings.Join(reg.Names(), ", "), ErrUnknownKind)
}

// RunJob runs one job (RoleRun) to its end, with its sinks and the
// runner's own, then waits up to DeliveryWait for its deliveries; those
// left are kept for a daemon (Client.PendingDeliveries counts them). It returns
// ErrStopped if the job stopped first (Stop, or ctx ended), its progress
// saved. A pcd cancel of the job stops its tasks. A job with tasks of a
// kind the runner does not know is ErrUnknownKind, and is left as it was
// for a runner that knows it.
func (r *Runner) RunJob(ctx context.Context, jobID int64) (store.Job, error) {
	if r.cfg.Role != RoleRun {
		return store.Job{}, fmt.Errorf("RunJob needs a %s runner, this one is a %s runner", RoleRun, r.cfg.Role)
	}
	job, err := r.db.Job(ctx, jobID)
	if err != nil {
		return store.Job{}, err
	}
	if err := knowsKinds(job, r.cfg.Registry); err != nil {
		return job, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done, err := r.begin(cancel)
	if err != nil {
		return store.Job{}, err
	}
	defer r.end(done)
	defer r.keepThroughput(ctx)()

	delivery := r.cfg.Delivery
	delivery.Scope = jobID
	deliveries := sink.New(r.db, withHooks(delivery))
	cfg := r.cfg.Config
	cfg.foreground = true
	onCommit := cfg.onCommit
	cfg.onCommit = func() {
		delivery.Wake.Notify()
		if onCommit != nil {
			onCommit()
		}
	}
	ctl := newJobController(r.db, cfg)
	// Stop drains the controller.
	var watch sync.WaitGroup
	defer watch.Wait()
	finished := make(chan struct{})
	defer close(finished)
	watch.Add(1)
	go func() {
		defer watch.Done()
		select {
		case <-r.drain:
			ctl.Drain()
		case <-finished:
		}
	}()
	deliveryCtx, stopDelivery := context.WithCancel(ctx)
	defer deliveries.Wait()
	defer stopDelivery()
	deliveries.Ensure(deliveryCtx)

	ctx, unwatch := r.watchLease(ctx, cancel)
	defer unwatch()
	job, err = ctl.Run(ctx, jobID)
	for errors.Is(err, errOthersRun) {
		// Other runners hold the job's last tasks (PostgreSQL): wait
		// for them, and take over any a dead one leaves.
		select {
		case <-time.After(r.cfg.CheckEvery):
		case <-r.drain:
		case <-ctx.Done():
		}
		job, err = ctl.Run(ctx, jobID)
	}
	if errors.Is(context.Cause(ctx), ErrLeaseLost) {
		return job, fmt.Errorf("%w: %w", ErrStopped, ErrLeaseLost)
	}
	if err == nil {
		// Its sinks finish once its callbacks are out, or when
		// DeliveryWait runs out; the rest stay for a daemon.
		delivery.Wake.Notify()
		r.waitDeliveries(deliveries, stopDelivery)
	}
	return job, err
}

// keepThroughput adds the runner's committed results to the database's
// throughput counts every second while it runs, and once more as it
// ends; call the returned function then.
func (r *Runner) keepThroughput(ctx context.Context) (stop func()) {
	return r.cfg.throughput.keep(ctx, r.db, func(err error) {
		r.cfg.Logger.Debug("could not add to the throughput counts; trying again", "err", err)
	})
}

// waitDeliveries waits, at most DeliveryWait, for deliveries to finish,
// then stops them.
func (r *Runner) waitDeliveries(d *sink.Deliverers, stop func()) {
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		d.Wait()
	}()
	wait := r.cfg.DeliveryWait
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	select {
	case <-finished:
		return
	case <-time.After(min(time.Second, wait)):
	}
	if r.cfg.OnDeliveryWait != nil {
		r.cfg.OnDeliveryWait(wait)
	}
	select {
	case <-finished:
	case <-timeout.C:
		stop()
		<-finished
	}
}

// Stop stops the runner: it starts no new task, lets running ones finish,
// and returns once Run or RunJob has returned. When ctx ends first, it
// interrupts the running tasks (a hard stop: they stay pending, with no
// attempt spent) and waits for that. It is safe to call more than once,
// and before Run.
func (r *Runner) Stop(ctx context.Context) error {
	r.drainOnce.Do(func() { close(r.drain) })
	r.mu.Lock()
	running, done, hard := r.running, r.done, r.hardStop
	r.mu.Unlock()
	if !running {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		hard(context.Canceled)
		<-done
		return ctx.Err()
	}
}

// Close stops the runner at once if it still runs, then stops listening,
// kills what its tasks left behind, and releases the runner lock.
func (r *Runner) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = r.Stop(ctx)
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	return r.release()
}

func (r *Runner) release() error {
	var errs []error
	if r.wake != nil {
		errs = append(errs, r.wake.Close())
		r.wake = nil
	}
	if r.stopReaping != nil {
		r.stopReaping()
		r.stopReaping = nil
	}
	process.RemoveCgroups()
	if r.lock != nil {
		errs = append(errs, r.lock.Release())
		r.lock = nil
	}
	return errors.Join(errs...)
}
