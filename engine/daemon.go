package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pcd-dev/pcd/engine/process"
	"github.com/pcd-dev/pcd/engine/sink"
	"github.com/pcd-dev/pcd/internal/notify"
	"github.com/pcd-dev/pcd/store"
)

// daemon runs a database's unfinished jobs until drained (Runner.Run).
// The runner holds the lock and has recovered.
type daemon struct {
	db  store.Store
	cfg RunnerConfig
	// pause is how long the daemon takes no work after a job's run
	// failed (the trouble's backoff).
	pause time.Duration
	drain <-chan struct{}
	// lastTakeOver is when the daemon last looked for gone runners' tasks;
	// lastWaiting, for jobs of kinds it does not know.
	lastTakeOver time.Time
	lastWaiting  time.Time
	// lastRelease is when a wake-up last looked for callbacks to release;
	// releaseLater, that one wake-up came too soon after it to look.
	lastRelease  time.Time
	releaseLater bool
	// slots bound the running tasks of groups with a workers limit.
	slots map[string]chan struct{}
	// cgroups hold the memory and cpus limits of groups, for their
	// commands together.
	cgroups map[string]*process.Cgroup
	// limits are the groups' limits, read again after a wake-up or a tick
	// (pcd group set wakes the runner), not at every pass.
	limits      map[string]store.Group
	limitsStale bool
	// openSeen says the last look found open jobs (still streamed); with
	// none, the next look waits for a wake-up or a tick, as a new open
	// job comes with one (its submit wakes the runner).
	openSeen, openStale bool
	// finishing hears when a running job has nothing left to run, only
	// commits (jobController.noteFinishing): it no longer counts against
	// MaxJobs, and the next job starts.
	finishing *notify.Notifier
}

// maxFinishing bounds the jobs that wait only for their last commits
// (finishing) beside the MaxJobs that run: while the disk stalls, jobs do
// not pile up.
const maxFinishing = 16

func newDaemon(db store.Store, cfg RunnerConfig, drain <-chan struct{}) *daemon {
	d := &daemon{db: db, cfg: cfg, drain: drain, limitsStale: true, openStale: true, finishing: notify.New()}
	onCommit := cfg.onCommit
	commits := cfg.Delivery.Wake
	d.cfg.onCommit = func() {
		commits.Notify()
		d.cfg.trouble.over(d.cfg.Logger)
		if onCommit != nil {
			onCommit()
		}
	}
	d.cfg.deferMarks = true // flushed when idle, each CheckEvery, and at the end
	return d
}

type jobDone struct {
	id  int64
	job store.Job
	err error
}

// run runs jobs until drained (after running tasks finish) or until ctx is
// cancelled (at once: running tasks are interrupted and stay pending).
// Every goroutine it starts has ended when it returns.
func (d *daemon) run(ctx context.Context) error {
	ctx, stopRun := context.WithCancelCause(ctx)
	defer stopRun(nil)
	defer d.background(ctx, stopRun)()
	d.redeliverFinished(ctx)

	deliveries, deliveryCtx, stopDeliveries := d.startDeliveries(ctx)
	defer stopDeliveries()

	// After the jobs have stopped: record the delivered marks still held.
	defer d.flushMarks(context.WithoutCancel(ctx))
	defer d.removeCgroups() // once every job has stopped
	var wg sync.WaitGroup
	defer wg.Wait()
	running := map[int64]*jobController{}
	// resting are jobs whose tasks left are other runners' (PostgreSQL):
	// not scheduled again before something changes.
	resting := map[int64]bool{}
	done := make(chan jobDone)
	var pauseUntil time.Time
	ticker := time.NewTicker(d.cfg.CheckEvery)
	defer ticker.Stop()
	draining := false
	drainC := d.drain // nil once draining: a closed channel would spin the loop

	// Sinks are looked for at the start, on each wake-up and tick, and
	// when a job with sinks of its own starts, not after every job.
	ensure := true
	for {
		wakeC := d.cfg.wake.C()
		finishingC := d.finishing.C()
		if ensure {
			deliveries.Ensure(deliveryCtx)
			ensure = false
		}
		if !draining && ctx.Err() == nil && time.Now().After(pauseUntil) {
			if d.schedule(ctx, running, resting, done, &wg) {
				deliveries.Ensure(deliveryCtx)
			}
		}
		if (draining || ctx.Err() != nil) && len(running) == 0 {
			return stoppedBy(ctx)
		}
		if len(running) == 0 {
			d.flushMarks(ctx) // no commit of a running job carries them
		}
		select {
		case <-wakeC:
			d.woken(ctx, running)
			clear(resting)
			ensure = true
		case <-ticker.C:
			d.ticked(ctx, running)
			clear(resting)
			ensure = true
		case <-finishingC:
			// A job left its slot: the next pass starts another.
		case r := <-done:
			delete(running, r.id)
			if errors.Is(r.err, errOthersRun) {
				resting[r.id] = true // until the next wake-up or tick
			} else if d.jobEnded(r) {
				// Stop taking work for a while: the problem is more
				// likely the database's than the job's.
				pauseUntil = time.Now().Add(d.pause)
			}
		case <-drainC:
			draining, drainC = true, nil
			for _, ctl := range running {
				ctl.Drain()
			}
		case <-ctx.Done():
			// Controllers see the same ctx and return; wait for them.
			for len(running) > 0 {
				r := <-done
				delete(running, r.id)
			}
			return stoppedBy(ctx)
		}
	}
}

// stoppedBy is what run returns once it has stopped every job: nil,
// unless the background check found the file corrupt.
func stoppedBy(ctx context.Context) error {
	if err := context.Cause(ctx); errors.Is(err, store.ErrCorrupt) {
		return err
	}
	return nil
}

// startDeliveries starts delivering callbacks to the sinks; the context
// it returns is theirs (Ensure). stop stops them: a hook in flight at a
// graceful stop finishes and is recorded, within DeliveryWait; a hard
// stop (ctx) cuts it short. Deliveries outlive a graceful drain only
// until Run returns.
func (d *daemon) startDeliveries(ctx context.Context) (_ *sink.Deliverers, deliveryCtx context.Context, stop func()) {
	deliveryCtx, stopDelivery := context.WithCancel(context.WithoutCancel(ctx))
	deliveries := sink.New(d.db, withHooks(d.cfg.Delivery))
	return deliveries, deliveryCtx, func() {
		grace, cancel := context.WithTimeout(ctx, d.cfg.DeliveryWait)
		deliveries.Stop(grace)
		cancel()
		stopDelivery()
		deliveries.Wait()
	}
}

// woken acts on a wake-up: something was committed or cancelled.
func (d *daemon) woken(ctx context.Context, running map[int64]*jobController) {
	d.cfg.Delivery.Wake.Notify() // pcd cancel commits callbacks too
	// A job that pcd cancel finished while no run of it was going on
	// here (it waited to start, or to retry a failed run): its callbacks
	// are this daemon's to release.
	d.releaseFinishedElsewhere(ctx, running)
	d.limitsStale, d.openStale = true, true
	d.markWaiting(ctx)
}

// ticked does the daemon's periodic work, for what no wake-up told it.
func (d *daemon) ticked(ctx context.Context, running map[int64]*jobController) {
	if d.releaseLater {
		d.releaseFinishedElsewhere(ctx, running)
	}
	d.limitsStale, d.openStale = true, true
	d.takeOver(ctx, running)
	d.markWaiting(ctx)
	d.flushMarks(ctx)
	cleanStaged(ctx, d.db, d.cfg.Logger)
}

// background starts the daemon's background services: the rest of the
// integrity check (which stops the run if the file is corrupt) and, with
// Retain, the pruner. The function it returns stops them and waits.
func (d *daemon) background(ctx context.Context, stopRun context.CancelCauseFunc) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if d.db.CheckDeferred() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.checkInBackground(ctx, stopRun)
		}()
	}
	if d.cfg.Retain > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.pruneLoop(ctx)
		}()
	}
	return func() {
		cancel()
		wg.Wait()
	}
}

// jobEnded logs how a job's run ended; true if it failed for a reason
// other than a stop, and the daemon should pause.
func (d *daemon) jobEnded(r jobDone) (pause bool) {
	switch {
	case r.err == nil:
		// The job callback's log line reports it.
		return false
	case errors.Is(r.err, ErrStopped):
		d.cfg.Logger.Info("job stopped; it resumes at the next start", "job", r.job.UUID, "done", r.job.Done(), "total", r.job.Total)
		return false
	default:
		d.pause = d.cfg.trouble.report(d.cfg.Logger, d.db.Path(), r.job, r.err, d.cfg.RetryAfter)
		return true
	}
}

// takeOver takes over the tasks of runners that are gone, on a database
// that several runners share, and wakes the runners if it requeued any:
// their producers have read past them.
func (d *daemon) takeOver(ctx context.Context, running map[int64]*jobController) {
	if !d.db.Shared() || time.Since(d.lastTakeOver) < d.cfg.CheckEvery/2 {
		return
	}
	d.lastTakeOver = time.Now()
	rec, err := recoverRunner(ctx, d.db, d.cfg.Logger)
	if err != nil {
		if ctx.Err() == nil {
			d.cfg.Logger.Warn("take over the tasks of runners that are gone", "err", err)
		}
		return
	}
	// The jobs this daemon runs read the taken-over tasks again, to run
	// them ahead of the rest of their queue.
	for id, seq := range rec.From {
		if c := running[id]; c != nil {
			c.takeOverFrom(seq)
		}
	}
	if rec.Requeued+rec.Failed > 0 {
		_ = d.db.Wake()
	}
	// What a gone runner committed but never released, this one does.
	d.redeliverFinished(ctx)
}

// markWaiting writes why the jobs with a kind this daemon does not know
// wait (it does not take them), at most once a second.
func (d *daemon) markWaiting(ctx context.Context) {
	if time.Since(d.lastWaiting) < time.Second {
		return
	}
	d.lastWaiting = time.Now()
	if _, err := d.db.MarkWaiting(ctx, d.cfg.Registry.Names(), WaitingReason); err != nil && ctx.Err() == nil {
		d.cfg.Logger.Warn("note the jobs whose kinds this daemon does not know", "err", err)
	}
}

// WaitingReason is why a job with kinds a runner does not know waits, as
// pcd status and pcd tasks show it.
func WaitingReason(missing []string) string {
	return "waits for a runner that knows " + kindList(missing)
}

// kindList names kinds: kind "a", or kinds "a", "b".
func kindList(kinds []string) string {
	quoted := make([]string, len(kinds))
	for i, k := range kinds {
		quoted[i] = strconv.Quote(k)
	}
	if len(kinds) == 1 {
		return "kind " + quoted[0]
	}
	return "kinds " + strings.Join(quoted, ", ")
}

// flushMarks records the delivered marks of finished jobs that no group
// commit has carried yet.
func (d *daemon) flushMarks(ctx context.Context) {
	if err := d.cfg.released.Flush(ctx, d.db); err != nil && ctx.Err() == nil {
		d.cfg.Logger.Warn("record delivered callbacks; they are released again after a crash", "err", err)
	}
}

// pruneLoop prunes what is older than Retain at the start and then every
// quarter of Retain (at least a second, at most ten minutes).
func (d *daemon) pruneLoop(ctx context.Context) {
	every := min(max(d.cfg.Retain/4, time.Second), 10*time.Minute)
	for {
		res, err := prune(ctx, d.db, d.cfg.SpoolDir, time.Now().Add(-d.cfg.Retain), false, false)
		switch {
		case err != nil && ctx.Err() == nil:
			d.cfg.Logger.Warn("prune", "err", err)
		case res.Jobs > 0 || res.Kept > 0:
			d.cfg.Logger.Info("pruned finished jobs", "jobs", res.Jobs, "rows", res.Rows,
				"kept_undelivered", res.Kept, "mib_before", res.Before>>20, "mib_after", res.After>>20)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// checkInBackground runs the integrity check that Open left undone on a
// large file, and stops the daemon if the file is corrupt.
func (d *daemon) checkInBackground(ctx context.Context, stop context.CancelCauseFunc) {
	log := d.cfg.Logger
	start := time.Now()
	log.Info("checking the database file in the background", "db", d.db.Path())
	err := d.db.Check(ctx)
	switch {
	case err == nil:
		log.Info("database check ok", "took", time.Since(start).Round(time.Millisecond))
	case errors.Is(err, store.ErrCorrupt):
		log.Error("the database file is corrupt: stopping; restore it from a backup", "err", err)
		stop(err)
	case ctx.Err() == nil:
		log.Warn("could not finish the database check", "err", err)
	}
}

// schedule starts unfinished jobs, oldest first, up to MaxJobs. It reads
// only the open jobs (to seal those whose submitter is gone) and as many
// runnable ones as there are free slots, so a pass costs the same with
// ten thousand jobs waiting as with one. A running job that someone else
// finished (pcd cancel) is stopped by its own controller. It reports
// whether it started a job that has sinks of its own.
func (d *daemon) schedule(ctx context.Context, running map[int64]*jobController, resting map[int64]bool,
	done chan<- jobDone, wg *sync.WaitGroup) (sinks bool) {
	log := d.cfg.Logger
	idle, ok := d.idleOpenJobs(ctx)
	if !ok {
		return false
	}
	busy, finishing := 0, 0
	skip := make(map[int64]bool, len(running)+len(resting))
	for id := range resting {
		skip[id] = true
	}
	inGroup := map[string]int{}
	for id, ctl := range running {
		skip[id] = true
		switch {
		case ctl.finishing.Load():
			finishing++
		case !idle[id]:
			busy++
			inGroup[ctl.group]++
		}
	}
	if finishing >= maxFinishing {
		return false // the next pass comes when one of them ends
	}
	limits, err := d.groupLimits(ctx)
	if err != nil {
		if ctx.Err() == nil {
			log.Error("read the groups' limits", "err", err)
		}
		return false
	}
	// A page can hold more of a group's jobs than it has room for: those
	// are passed over, and the next page leaves the full group out.
	for range 4 {
		free := d.cfg.MaxJobs - busy
		if free <= 0 {
			return sinks
		}
		var full []string
		for g, lim := range limits {
			if lim.MaxJobs > 0 && inGroup[g] >= lim.MaxJobs {
				full = append(full, g)
			}
		}
		jobs, err := d.db.RunnableJobs(ctx, store.RunnableQuery{Skip: skip, Limit: free, Now: time.Now(), FullGroups: full, Kinds: d.cfg.Registry.Names()})
		if err != nil {
			if ctx.Err() == nil {
				log.Error("list unfinished jobs", "err", err)
			}
			return sinks
		}
		passed := false
		for _, j := range jobs {
			skip[j.ID] = true
			if lim := limits[j.Group]; lim.MaxJobs > 0 && inGroup[j.Group] >= lim.MaxJobs {
				passed = true
				delete(skip, j.ID)
				continue
			}
			if j.After != store.AfterNone && !d.depsAllow(ctx, j) {
				continue
			}
			sinks = sinks || j.Sinks != nil
			running[j.ID] = d.startJob(ctx, j, limits[j.Group], done, wg)
			busy++
			inGroup[j.Group]++
		}
		if !passed || len(jobs) == 0 {
			return sinks
		}
	}
	return sinks
}

// idleOpenJobs reads the open jobs (still being streamed), when some may
// be, and says which are idle: their committed tasks are all done, so
// they hold no slot while other jobs wait. It seals those whose
// submitter is gone.
func (d *daemon) idleOpenJobs(ctx context.Context) (idle map[int64]bool, ok bool) {
	log := d.cfg.Logger
	idle = map[int64]bool{}
	if !d.openSeen && !d.openStale {
		return idle, true
	}
	open, err := d.db.OpenJobs(ctx)
	if err != nil {
		if ctx.Err() == nil {
			log.Error("list open jobs", "err", err)
		}
		return nil, false
	}
	d.openSeen, d.openStale = len(open) > 0, false
	for _, j := range open {
		if sealed, err := d.db.SealOrphan(ctx, j.ID); err != nil {
			log.Error("check the submitter of an open job", "job", j.UUID, "err", err)
		} else if sealed {
			log.Warn("the submitter of an open job is gone: sealed it with the tasks that committed",
				"job", j.UUID, "tasks", j.Total)
			d.cfg.wake.Notify() // its producer stops waiting for more
			continue
		}
		idle[j.ID] = j.Total == j.Done()
	}
	return idle, true
}

// startJob starts running a job, in its group's limits; done hears when
// the run ends.
func (d *daemon) startJob(ctx context.Context, j store.Job, limit store.Group, done chan<- jobDone, wg *sync.WaitGroup) *jobController {
	cfg := d.cfg.Config
	cfg.groupSlots = d.groupSlots(j.Group, limit.Workers)
	cfg.limitGroup = d.limitGroup(j.Group, limit)
	ctl := newJobController(d.db, cfg)
	ctl.group = j.Group
	if !d.db.Shared() {
		ctl.onFinishing = d.finishing.Notify
	}
	d.cfg.Logger.Info("job started", "job", j.UUID, "name", j.Name, "tasks", j.Total, "done", j.Done(),
		"workers", j.Workers, "queue_size", j.QueueSize)
	wg.Add(1)
	go func() {
		defer wg.Done()
		job, err := ctl.run(ctx, j) // as the scheduling pass read it
		done <- jobDone{id: j.ID, job: job, err: err}
	}()
	return ctl
}

// groupLimits are the groups' limits, by name: read again when stale.
func (d *daemon) groupLimits(ctx context.Context) (map[string]store.Group, error) {
	if !d.limitsStale && d.limits != nil {
		return d.limits, nil
	}
	groups, err := d.db.Groups(ctx)
	if err != nil {
		return nil, err
	}
	d.limits = make(map[string]store.Group, len(groups))
	for _, g := range groups {
		d.limits[g.Name] = g
	}
	d.limitsStale = false
	return d.limits, nil
}

// groupSlots is the semaphore that bounds the running tasks of a group
// with a workers limit; nil for none. A changed limit takes a new one,
// for the jobs that start from then on.
func (d *daemon) groupSlots(group string, workers int) chan struct{} {
	if workers <= 0 {
		return nil
	}
	if d.slots == nil {
		d.slots = map[string]chan struct{}{}
	}
	s := d.slots[group]
	if s == nil || cap(s) != workers {
		s = make(chan struct{}, workers)
		d.slots[group] = s
	}
	return s
}

// limitGroup is the cgroup that holds a group's memory and cpus limits
// for its commands, made at its first job with them, and changed as the
// limits change; none for a group without them. If the runner cannot
// make it, its commands fail with the reason rather than run without
// their limits.
func (d *daemon) limitGroup(group string, g store.Group) limitGroup {
	lim := process.Limits{Memory: g.Memory, CPUs: g.CPUs}
	if lim.IsZero() {
		return limitGroup{}
	}
	name := groupLabel(group)
	if cg := d.cgroups[group]; cg != nil {
		if cg.Limits() != lim {
			if err := cg.SetLimits(lim); err != nil {
				d.cfg.Logger.Warn("change a group's limits", "group", name, "memory", g.Memory, "cpus", g.CPUs, "err", err)
			}
		}
		return limitGroup{name: name, cg: cg}
	}
	sum := sha256.Sum256([]byte(group))
	cg, err := process.NewGroupCgroup("group-"+hex.EncodeToString(sum[:8]), lim)
	if err != nil {
		d.cfg.Logger.Error("cannot enforce a group's limits: its commands fail", "group", name, "err", err)
		return limitGroup{name: name, err: err}
	}
	if d.cgroups == nil {
		d.cgroups = map[string]*process.Cgroup{}
	}
	d.cgroups[group] = cg
	return limitGroup{name: name, cg: cg}
}

// removeCgroups removes the groups' cgroups, once their jobs have stopped.
func (d *daemon) removeCgroups() {
	for name, cg := range d.cgroups {
		cg.Remove()
		delete(d.cgroups, name)
	}
}

// groupLabel is how a group is named in a message.
func groupLabel(group string) string {
	if group == "" {
		return "(default)"
	}
	return strconv.Quote(group)
}

// depsAllow says whether a job whose dependencies all ended may start.
// With --after, one that failed or was cancelled cancels the job, with
// the reason in its job callback.
func (d *daemon) depsAllow(ctx context.Context, j store.Job) bool {
	deps, err := d.db.JobDeps(ctx, j.ID)
	if err != nil {
		d.cfg.Logger.Error("read the jobs a job waits for", "job", j.UUID, "err", err)
		return false
	}
	if j.After == store.AfterAny {
		return true
	}
	for _, dep := range deps {
		if dep.State == store.Succeeded {
			continue
		}
		reason := fmt.Sprintf("job %s, which it waits for (--after), %s", dep.UUID, dep.State)
		if _, err := cancelJobBecause(ctx, d.db, j.ID, reason); err != nil {
			if errors.Is(err, store.ErrConflict) {
				// Another daemon cancelled it first (PostgreSQL).
				d.cfg.Logger.Debug("job finished by another runner", "job", j.UUID, "err", err)
				return false
			}
			d.cfg.Logger.Error("cancel a job whose dependency did not succeed", "job", j.UUID, "err", err)
			return false
		}
		d.cfg.Logger.Info("job cancelled: "+reason, "job", j.UUID)
		d.cfg.Delivery.Wake.Notify()
		return false
	}
	return true
}

// releaseFinishedElsewhere is redeliverFinished at a wake-up, at most
// every releaseEvery, for the jobs not running here.
func (d *daemon) releaseFinishedElsewhere(ctx context.Context, running map[int64]*jobController) {
	if time.Since(d.lastRelease) < releaseEvery {
		d.releaseLater = true // at the next tick
		return
	}
	d.lastRelease, d.releaseLater = time.Now(), false
	d.redeliverFinished(ctx, running)
}

// releaseEvery bounds how often a wake-up looks for callbacks to release:
// the look reads every job's release cursor.
const releaseEvery = 200 * time.Millisecond

// redeliverFinished releases undelivered callbacks of jobs that finished
// while no runner was delivering, such as a job cancelled by pcd cancel;
// jobs that this daemon runs release their own.
func (d *daemon) redeliverFinished(ctx context.Context, running ...map[int64]*jobController) {
	ids, err := d.db.UnreleasedJobs(ctx)
	if err != nil {
		if ctx.Err() == nil {
			d.cfg.Logger.Error("find undelivered callbacks", "err", err)
		}
		return
	}
	ctl := newJobController(d.db, d.cfg.Config)
	for _, id := range ids {
		if len(running) > 0 && running[0][id] != nil {
			continue
		}
		if err := ctl.redeliver(ctx, id); err != nil {
			d.cfg.Logger.Error("redeliver callbacks", "job_id", id, "err", err)
		}
	}
}
