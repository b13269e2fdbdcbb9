package engine

import (
	"context"
	"errors"
	"maps"
	"sync"
	"time"

	"github.com/pcd-dev/pcd/store"
)

// retries tracks, for the producer, the tasks it has queued whose outcome
// is not committed yet. Tasks waiting out a backoff are not held here:
// they go back to the database (tasks.not_before, indexed), and the
// producer reads a page of those that are due when they are, so memory
// does not grow with the number waiting.
type retries struct {
	mu       sync.Mutex
	inflight map[int64]bool
	// waits is set once a task of the job may be waiting: one was at the
	// start, or an outcome sent one back. Until then the producer never
	// looks for due tasks, so a job without retries pays nothing.
	waits bool
	poke  chan struct{} // cap 1: something changed
}

func newRetries() *retries {
	return &retries{inflight: map[int64]bool{}, poke: make(chan struct{}, 1)}
}

func (r *retries) signal() {
	select {
	case r.poke <- struct{}{}:
	default:
	}
}

// resolved records that queued tasks got an outcome (or will not run).
func (r *retries) resolved(seqs []int64) {
	if len(seqs) == 0 {
		return
	}
	r.mu.Lock()
	for _, seq := range seqs {
		delete(r.inflight, seq)
	}
	r.mu.Unlock()
	r.signal()
}

// wait records that a task went back to wait out a backoff; its due time
// is in the database, committed.
func (r *retries) wait() {
	r.mu.Lock()
	r.waits = true
	r.mu.Unlock()
	r.signal()
}

// readFrom is what was in flight when a read of the database began (see
// queue).
type readFrom map[int64]bool

// beginRead is called before the producer reads tasks to queue: it keeps
// the set in flight then, which is at most the queue and the workers.
func (r *retries) beginRead() readFrom {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.inflight) == 0 {
		return nil
	}
	return maps.Clone(r.inflight)
}

// queue counts seq, which a read that began at from returned, in flight;
// false if it is in flight now or was when the read began. A task in
// flight at the read's start may have been read as it was before its
// attempt committed: its outcome can commit and be resolved before the
// read's tasks are queued, and the stale row would then run the same
// attempt again (or run a task that has succeeded). What the read saw of
// a task not in flight at its start was committed, since outcomes are
// resolved only after their commit.
func (r *retries) queue(seq int64, from readFrom) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.inflight[seq] || from[seq] {
		return false
	}
	r.inflight[seq] = true
	return true
}

func (r *retries) state() (waits bool, inflight int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.waits, len(r.inflight)
}

// minPage is the smallest page of pending tasks the producer reads: a
// read costs about as much per query as 300 rows do (BenchmarkPendingTasks:
// 300k tasks/s in pages of 100, 430k in pages of 1000).
const minPage = 1000

// On a database that several runners share, a page read is a claim, and
// what a runner claims no other runs. So a runner claims only when a
// worker of its own is free, with no task queued or running for it, or,
// for short tasks, when its queue is half empty (hungry). It claims what
// its free workers can start; tasks shorter than shortTask (0.1 s) it
// claims a second of at a time (claimAhead, at the rate the workers do
// them), up to maxClaim tasks and maxClaimBytes of payloads. A job of 100
// one-second tasks on two daemons of 25 workers thus runs 25 at a time on
// each, not 100 on the first; and a runner of no-op tasks still claims
// thousands at a time, which it must: a claim's round trips, its commit
// and its wait for the job's lock cost the same for 250 tasks as for
// 4,000 (1 daemon, 500k no-ops: 25k tasks/s in claims of 250, 34k in
// claims of 1,000, 38k in claims of 4,000). It also leaves less to take
// over when a runner dies.
const (
	maxClaim      = 4096
	maxClaimBytes = 8 << 20
	shortTask     = 100 * time.Millisecond
	claimAhead    = time.Second
	// rateWindow is the shortest time the rate of tasks done is measured
	// over.
	rateWindow = 100 * time.Millisecond
)

// produce streams the job's pending tasks, in seq order, into queue, then
// the tasks that come back from a failed attempt as their backoff ends.
// Pages are read by key, each the size of the queue or minPage tasks if
// that is more, so memory stays bounded whatever the size of the job. It blocks while queue is full, and
// returns once every task it queued has an outcome and none waits.
func (c *jobController) produce(ctx context.Context, job store.Job, queue chan<- store.Task) error {
	p := &producer{c: c, ctx: ctx, job: job, queue: queue, page: max(job.QueueSize, minPage), claims: c.shared,
		after: job.DoneThrough, // every task up to it is final
		// One instant splits the tasks waiting out a backoff (read when
		// due) from those the first pass reads.
		passDue: c.cfg.Clock.Now()}
	// The finished prefix stops below the lowest task already waiting.
	// Only a failed attempt's commit, which starts the job, sends a task
	// to wait: a job that never started on a database of one runner has
	// none, and a daemon draining small jobs does not ask.
	if !job.StartedAt.IsZero() || c.shared {
		seq, err := c.db.MinWaitingSeq(ctx, job.ID)
		if err != nil {
			return err
		}
		if seq > 0 {
			c.frontier.held(seq)
			c.retries.wait()
		}
	}
	for {
		if c.draining() {
			return nil
		}
		// Take the wake channel and the seal before reading, so that a
		// task added in between is never missed.
		wake := c.cfg.wake.C()
		waits, inflight := c.retries.state()
		var due time.Time
		if waits {
			sent, next, err := p.sendDue()
			if err != nil {
				return p.end(err)
			}
			if sent {
				continue
			}
			due = next
		}
		if from := c.takenFrom.Swap(0); from > 0 && from <= p.after {
			if err := p.sendTakenOver(from); err != nil {
				return p.end(err)
			}
			continue
		}
		if !p.passDone && p.claims && !p.hungry() {
			// Nothing to claim for yet: a worker done with a task, an
			// outcome or a wake-up looks again.
			if stop, err := p.wait(wake, due); stop {
				return err
			}
			continue
		}
		if !p.passDone {
			sent, err := p.sendPending()
			if err != nil {
				return p.end(err)
			}
			if sent || p.passDone {
				continue
			}
		} else if due.IsZero() && inflight == 0 {
			return nil // nothing in flight, nothing waiting
		}
		if stop, err := p.wait(wake, due); stop {
			return err
		}
	}
}

// producer is one run of produce.
type producer struct {
	c     *jobController
	ctx   context.Context
	job   store.Job
	queue chan<- store.Task
	// page is the size of the next read. On a shared database, where a
	// read is a claim, claimSize sets it before each claim.
	page   int
	claims bool
	// lastClaimed tasks with lastBytes of payloads were claimed last.
	lastClaimed int
	lastBytes   int
	// rate is how many tasks per second the workers were done with, over
	// the last window of at least rateWindow that ended at a claim: from
	// windowStart, when windowResolved had been.
	rate           float64
	windowStart    time.Time
	windowResolved int64
	// after is the last seq the first pass has read; passDue splits the
	// tasks it reads from those waiting out a backoff; passDone is set
	// when it has read the last task of a sealed job.
	after    int64
	passDue  time.Time
	passDone bool
}

// send queues t; false if the run is stopping.
func (p *producer) send(t store.Task) bool { return p.sendTo(p.queue, t) }

// sendTo queues t in lane, the queue or the lane ahead of it.
func (p *producer) sendTo(lane chan<- store.Task, t store.Task) bool {
	p.c.inHand.Add(1)
	select {
	case lane <- t:
	case <-p.ctx.Done():
		return false
	case <-p.c.drain:
		return false
	}
	if p.c.onProduce != nil {
		p.c.onProduce(t)
	}
	return true
}

// errStopSending says that send failed: the run is stopping.
var errStopSending = errors.New("the run is stopping")

// end is what produce returns for err: for errStopSending, ctx's cause,
// or nil for a drain.
func (p *producer) end(err error) error {
	if errors.Is(err, errStopSending) {
		return context.Cause(p.ctx)
	}
	return err
}

// sendDue queues the tasks whose backoff has ended, a page at a time; one
// in flight already (queued by the first pass, or before its last outcome
// committed) is left alone. When it sends none, due is when to look
// again (zero if no task waits).
func (p *producer) sendDue() (sent bool, due time.Time, err error) {
	c := p.c
	now := c.cfg.Clock.Now()
	from := c.retries.beginRead()
	tasks, err := c.db.DueTasks(p.ctx, p.job.ID, now, p.page)
	if err != nil {
		return false, time.Time{}, err
	}
	for _, t := range tasks {
		if !c.retries.queue(t.Seq, from) {
			continue
		}
		if !p.send(t) {
			return false, time.Time{}, errStopSending
		}
		sent = true
	}
	switch {
	case sent:
		return true, time.Time{}, nil
	case len(tasks) > 0:
		// Due, but all in flight: their outcomes come first.
		return false, now.Add(c.cfg.PollEvery), nil
	}
	next, ok, err := c.db.NextDue(p.ctx, p.job.ID)
	if err != nil || !ok {
		return false, time.Time{}, err
	}
	return false, next, nil
}

// sendTakenOver reads again the tasks from seq up to the first pass's
// position that are pending: a takeover put them back (a gone runner had
// them). They go to the lane ahead of the queue. Tasks read past the
// first pass's position, claimed with them, take the queue, and the pass
// goes on after them.
func (p *producer) sendTakenOver(from int64) error {
	c := p.c
	end, after := p.after, from-1
	for after < end {
		read := c.retries.beginRead()
		tasks, err := c.db.PendingTasks(p.ctx, p.job.ID, after, p.page, p.passDue)
		if err != nil {
			return err
		}
		for _, t := range tasks {
			after = t.Seq
			var lane chan<- store.Task = c.ahead
			if t.Seq > end {
				lane, p.after = p.queue, max(p.after, t.Seq)
			}
			c.frontier.queued(t.Seq)
			if !c.retries.queue(t.Seq, read) {
				continue
			}
			if !p.sendTo(lane, t) {
				return errStopSending
			}
		}
		if len(tasks) < p.page {
			return nil
		}
	}
	return nil
}

// sendPending queues the first pass's next page of pending tasks, in seq
// order; sent is false when there were none.
func (p *producer) sendPending() (sent bool, err error) {
	c := p.c
	if !p.job.Sealed {
		j, err := c.db.Job(p.ctx, p.job.ID)
		if err != nil {
			return false, err
		}
		p.job.Sealed = j.Sealed
	}
	if p.claims {
		p.claimSize()
	}
	from := c.retries.beginRead()
	tasks, err := c.db.PendingTasks(p.ctx, p.job.ID, p.after, p.page, p.passDue)
	if err != nil {
		return false, err
	}
	if p.claims {
		p.claimed(tasks)
	}
	if len(tasks) == 0 {
		p.passDone = p.job.Sealed
		p.endPass()
		return false, nil
	}
	// A sealed job gets no new tasks: a short page ends the pass.
	p.passDone = p.job.Sealed && len(tasks) < p.page
	for _, t := range tasks {
		p.after = t.Seq
		c.frontier.queued(t.Seq)
		if !c.retries.queue(t.Seq, from) {
			// Due at the start, and queued already as a due retry.
			continue
		}
		if !p.send(t) {
			return false, errStopSending
		}
	}
	p.endPass()
	return true, nil
}

// endPass tells the controller, once every task of the first pass is
// queued, that the pass is done (noteFinishing).
func (p *producer) endPass() {
	if p.passDone {
		p.c.passDone.Store(true)
		p.c.noteFinishing()
	}
}

// hungry says whether the run needs a claim: a worker is free, with no
// task queued or running for it, or, for short tasks, the queue is half
// empty.
func (p *producer) hungry() bool {
	return p.free() > 0 || (p.shortTasks() && len(p.queue) < cap(p.queue)/2)
}

// free is how many workers have no task queued or running for them.
func (p *producer) free() int { return p.c.workers - int(p.c.inHand.Load()) }

// shortTasks says whether the job's tasks take less than shortTask each,
// at the last rate measured: claims of a worker's worth would cost more
// than the tasks.
func (p *producer) shortTasks() bool {
	return p.rate*shortTask.Seconds() > float64(p.c.workers)
}

// claimSize sets the size of the next claim: what the free workers can
// start, or, for short tasks, claimAhead of them at the rate the workers
// are done with them; within maxClaim tasks and maxClaimBytes at the last
// claim's payload sizes. (The rate is of tasks done, not of tasks taken,
// which workers that start at once take in a moment however long they
// run; nor of outcomes committed, which come in bursts.)
func (p *producer) claimSize() {
	now := time.Now()
	resolved := p.c.doneN.Load()
	if p.windowStart.IsZero() {
		p.windowStart, p.windowResolved = now, resolved
	} else if took := now.Sub(p.windowStart); took >= rateWindow {
		p.rate = float64(resolved-p.windowResolved) / took.Seconds()
		p.windowStart, p.windowResolved = now, resolved
	}
	n := max(p.free(), 1)
	if p.shortTasks() {
		n = max(n, int(p.rate*claimAhead.Seconds()))
	}
	n = min(n, maxClaim)
	if p.lastClaimed > 0 && p.lastBytes > 0 {
		n = min(n, max(1, maxClaimBytes*p.lastClaimed/p.lastBytes))
	}
	p.page = n
}

// claimed records a claim of tasks, for the next claimSize.
func (p *producer) claimed(tasks []store.Task) {
	p.lastClaimed, p.lastBytes = len(tasks), 0
	for _, t := range tasks {
		p.lastBytes += len(t.Payload)
	}
}

// wait waits for a change when there is nothing to queue now: a wake-up,
// an outcome, the next due time, or the poll interval. stop is true when
// the run is to end, with err.
func (p *producer) wait(wake <-chan struct{}, due time.Time) (stop bool, err error) {
	c := p.c
	wait := c.cfg.PollEvery
	if !due.IsZero() {
		wait = min(wait, max(due.Sub(c.cfg.Clock.Now()), 0))
	}
	if p.passDone && due.IsZero() {
		wait = time.Hour // only an outcome (a poke) can change anything
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-wake:
	case <-c.retries.poke:
	case <-timer.C:
	case <-p.ctx.Done():
		return true, context.Cause(p.ctx)
	case <-c.drain:
		return true, nil
	}
	return false, nil
}
