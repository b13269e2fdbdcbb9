package engine

import (
	"context"
	"time"

	"github.com/pcd-dev/pcd/internal/failpoint"
	"github.com/pcd-dev/pcd/store"
)

// completer commits task starts and results in batches (group commit) and
// releases each task's callback only after its batch commits.
type completer struct {
	c       *jobController
	job     store.Job
	elapsed func() time.Duration
	slots   *runSlots

	// unreleased is the span of callbacks released since the last commit
	// and not yet recorded as released: the next transaction records it,
	// so the bookkeeping costs no commit of its own.
	unreleased store.Span
	done       int64
	// startedAt is when this run started, for the job's first start.
	startedAt time.Time
	// finished is the job as the commit that finished it left it.
	finished *store.Job
	// interrupted closes when the run is cancelled (a hard stop): a
	// commit stops waiting for the write lock then.
	interrupted <-chan struct{}
	// halt applies the job's --halt policy to the committed results.
	halt *halter
}

// commit writes a batch. While another process holds the database's write
// lock past the busy timeout (an sqlite3 shell, a big submit), or the
// server is out of reach for a moment (it restarts), it waits and tries
// the same batch again rather than tear the job down: the batch's
// transaction was rolled back whole, and its tasks are in hand. (A commit
// whose outcome was lost with the connection is safe to try again: a
// result already final is kept, not written twice.) It logs the wait
// once. Other errors (a full disk) are returned.
func (m *completer) commit(ctx context.Context, batch store.Batch) (store.Committed, error) {
	waited := false
	for {
		start := time.Now()
		committed, err := m.c.db.CompleteTasks(ctx, batch)
		if err == nil && m.c.cfg.OnGroupCommit != nil {
			m.c.cfg.OnGroupCommit(len(batch.Results), len(batch.Starts), time.Since(start))
		}
		if !store.Temporary(err) {
			if waited && err == nil {
				m.c.cfg.Logger.Info("the database takes writes again; resumed", "job", m.job.UUID)
			}
			return committed, err
		}
		if !waited {
			waited = true
			m.c.cfg.Logger.Warn("a group commit waits for the database", "job", m.job.UUID, "err", err)
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-m.interrupted:
			return store.Committed{}, err
		case <-ctx.Done():
			return store.Committed{}, err
		}
	}
}

// run serves starts and results until results closes, which happens once
// every consumer has returned. After a commit fails it cancels the run,
// refuses further starts and discards results, so no consumer blocks.
func (m *completer) run(ctx context.Context, starts <-chan startReq, results <-chan outcome, cancel context.CancelCauseFunc) error {
	var failed error
	g := newGroup(batchSize(m.job, m.c.cfg.MaxBatch))
	// markTimer wakes the completer when a running task is due for its
	// start mark.
	markTimer := time.NewTimer(time.Hour)
	defer markTimer.Stop()
	for !g.closed {
		g.collect(starts, results, m.slots.poke, markTimer.C)
		if failed != nil {
			g.refuse()
			continue
		}
		if !m.build(g, markTimer) {
			continue // only the close, or a task that has finished already
		}
		committed, err := m.commit(ctx, g.batch)
		if err != nil {
			failed = err
			cancel(err)
			g.refuse()
			continue
		}
		m.committed(g, committed)
	}
	return failed
}

// group is what one group commit is made of: the start requests and
// outcomes gathered, and the batch built from them. Its slices are reused
// from one commit to the next.
type group struct {
	max     int
	closed  bool // results is closed: every consumer has returned
	sreqs   []startReq
	outs    []outcome
	batch   store.Batch
	records []store.Result
	// recordOut[i] is the index in outs of records[i]: the link from a
	// committed callback (Committed.ResultIndex) to its outcome.
	recordOut []int
	marks     []store.Mark
	done      []int64 // seqs resolved by a commit
}

func newGroup(max int) *group {
	return &group{max: max, sreqs: make([]startReq, 0, max), outs: make([]outcome, 0, max),
		records: make([]store.Result, 0, max), recordOut: make([]int, 0, max), done: make([]int64, 0, max)}
}

// collect waits for a start, a result, a poke or the mark timer, then
// takes whatever else is ready, up to max.
func (g *group) collect(starts <-chan startReq, results <-chan outcome, poke <-chan struct{}, marks <-chan time.Time) {
	g.sreqs, g.outs = g.sreqs[:0], g.outs[:0]
	select {
	case s := <-starts:
		g.sreqs = append(g.sreqs, s)
	case o, ok := <-results:
		g.add(o, ok)
	case <-poke:
	case <-marks:
	}
	for !g.closed && len(g.sreqs)+len(g.outs) < g.max {
		select {
		case s := <-starts:
			g.sreqs = append(g.sreqs, s)
		case o, ok := <-results:
			g.add(o, ok)
		default:
			return
		}
	}
}

func (g *group) add(o outcome, ok bool) {
	if !ok {
		g.closed = true
		return
	}
	g.outs = append(g.outs, o)
}

// refuse tells the start requests that their tasks must not run.
func (g *group) refuse() {
	for _, s := range g.sreqs {
		s.reply <- false
	}
}

// build makes the group's batch; false if there is nothing to commit.
func (m *completer) build(g *group, markTimer *time.Timer) bool {
	g.batch = store.Batch{JobID: m.job.ID, Round: m.job.Round, Elapsed: m.elapsed(), Released: m.unreleased,
		DoneThrough: m.c.frontier.through(), Starts: g.batch.Starts[:0], Interrupted: g.batch.Interrupted[:0],
		StartedAt: m.startedAt, Finish: jobMessage}
	for _, s := range g.sreqs {
		g.batch.Starts = append(g.batch.Starts, store.Start{Seq: s.task.Seq, At: s.at})
	}
	// Isolated tasks still running after the results above were sent:
	// their marks come after the waited starts, so Started lines up.
	// Tasks still running: all of them when this commit happens anyway,
	// else only those due for their marks.
	var next time.Duration
	g.batch.Starts, next = m.slots.unmarked(g.batch.Starts, len(g.sreqs) == 0 && len(g.outs) == 0)
	if next > 0 {
		markTimer.Reset(next)
	}
	g.records, g.recordOut = g.records[:0], g.recordOut[:0]
	for i, o := range g.outs {
		if o.interrupted {
			g.batch.Interrupted = append(g.batch.Interrupted, o.task.Seq)
		} else {
			g.records = append(g.records, o.res)
			g.recordOut = append(g.recordOut, i)
		}
	}
	g.batch.Results = g.records
	if len(g.batch.Starts) == 0 && len(g.records) == 0 && len(g.batch.Interrupted) == 0 {
		return false
	}
	g.marks = m.c.cfg.released.pending(g.marks[:0])
	g.batch.Marks = g.marks
	return true
}

func jobMessage(j store.Job) ([]byte, error) { return jobEvent(j).MarshalJSON() }

// discarded tells why n results were not recorded: the tasks are no
// longer this runner's. Either the job was finished meanwhile (cancelled,
// or halted by another runner), which is no trouble, or this runner lost
// its lease and another took the tasks over.
func (m *completer) discarded(n int) {
	if j, err := m.c.db.Job(context.Background(), m.job.ID); err == nil && (j.Finished() || j.Halting != "") {
		m.c.cfg.Logger.Debug("results not recorded: the job was finished meanwhile", "job", m.job.UUID, "state", j.State, "results", n)
		return
	}
	m.c.cfg.Logger.Warn("discarded results of tasks that another runner took over: this runner had lost its lease",
		"job", m.job.UUID, "results", n)
}

// committed acts on a group's commit: it answers the start requests,
// resolves the tasks, and releases the callbacks, each with its outcome's
// event.
func (m *completer) committed(g *group, committed store.Committed) {
	if committed.Discarded > 0 {
		m.discarded(committed.Discarded)
	}
	m.c.cfg.released.recorded(g.marks...)
	m.c.cfg.onCommit()
	if len(g.batch.Starts) > 0 {
		failpoint.Hit(failpoint.AfterTaskStart) // a task is durably running
	}
	g.done = g.done[:0]
	for i, s := range g.sreqs {
		s.reply <- committed.Started[i]
		if !committed.Started[i] {
			g.done = append(g.done, s.task.Seq)
		}
	}
	for _, o := range g.outs {
		if !o.res.RetryAt.IsZero() {
			m.c.frontier.waiting(o.task.Seq)
			m.c.retries.wait() // before resolved: the producer must see it waits
		}
		g.done = append(g.done, o.task.Seq)
	}
	m.c.retries.resolved(g.done)
	if committed.JobCallback != nil {
		m.c.finishedHere.Store(true) // before the releases, which may be slow
	}
	m.unreleased = store.Span{}
	if on := m.c.cfg.OnCallbacks; on != nil && (len(committed.Callbacks) > 0 || committed.JobCallback != nil) {
		cbs := committed.Callbacks
		if cb := committed.JobCallback; cb != nil {
			cbs = append(cbs, *cb)
		}
		on(cbs)
	}
	succeeded := 0
	for i, cb := range committed.Callbacks {
		m.c.frontier.finished(cb.TaskSeq)
		ev := g.outs[g.recordOut[committed.ResultIndex[i]]].event
		ev.CallbackID = cb.ID
		if ev.Task != nil && ev.Task.State == store.Succeeded {
			succeeded++
		}
		m.c.release(m.job.ID, ev)
		if ev.Task != nil && m.halt.count(ev.Task.State) {
			m.c.halted(m.job, m.halt.reason, m.halt.policy.Now)
		}
		if m.unreleased.From == 0 {
			m.unreleased.From = cb.ID
		}
		m.unreleased.To = cb.ID
	}
	m.done += int64(len(committed.Callbacks))
	m.c.cfg.throughput.add(time.Now(), succeeded, len(committed.Callbacks)-succeeded)
	if cb := committed.JobCallback; cb != nil {
		ev := jobEvent(committed.Job)
		ev.CallbackID = cb.ID
		m.c.release(m.job.ID, ev)
		m.finished = &committed.Job
		m.unreleased = store.Span{From: cb.ID, To: cb.ID}
	}
}
