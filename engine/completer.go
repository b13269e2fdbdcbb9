package engine

import (
	"context"
	"errors"
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
}

// commit writes a batch. While another process holds the database's write
// lock past the busy timeout (an sqlite3 shell, a big submit), it waits and
// tries the same batch again rather than tear the job down: the batch's
// transaction was rolled back whole, and its tasks are in hand. It logs
// the wait once. Other errors (a full disk) are returned.
func (m *completer) commit(ctx context.Context, batch store.Batch) (store.Committed, error) {
	waited := false
	for {
		committed, err := m.c.db.CompleteTasks(ctx, batch)
		if !errors.Is(err, store.ErrBusy) {
			if waited && err == nil {
				m.c.cfg.Logger.Info("the database takes writes again; resumed", "job", m.job.UUID)
			}
			return committed, err
		}
		if !waited {
			waited = true
			m.c.cfg.Logger.Warn("another process holds the database's write lock: the job waits for it; nothing is lost",
				"job", m.job.UUID)
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
	var (
		failed  error
		closed  bool
		max     = batchSize(m.job, m.c.cfg.MaxBatch)
		sreqs   = make([]startReq, 0, max)
		outs    = make([]outcome, 0, max)
		batch   store.Batch
		marks   []store.Mark
		finish  = func(j store.Job) ([]byte, error) { return jobEvent(j).MarshalJSON() }
		records = make([]store.Result, 0, max)
		// recordOut[i] is the index in outs of records[i].
		recordOut = make([]int, 0, max)
		done      = make([]int64, 0, max) // seqs resolved by a commit
		// markTimer wakes the completer when a running task is due for
		// its start mark.
		markTimer = time.NewTimer(time.Hour)
	)
	defer markTimer.Stop()
	add := func(o outcome, ok bool) {
		if !ok {
			closed = true
			return
		}
		outs = append(outs, o)
	}
	for !closed {
		sreqs, outs = sreqs[:0], outs[:0]
		select {
		case s := <-starts:
			sreqs = append(sreqs, s)
		case o, ok := <-results:
			add(o, ok)
		case <-m.slots.poke:
		case <-markTimer.C:
		}
	fill:
		for !closed && len(sreqs)+len(outs) < max {
			select {
			case s := <-starts:
				sreqs = append(sreqs, s)
			case o, ok := <-results:
				add(o, ok)
			default:
				break fill
			}
		}
		if failed != nil {
			for _, s := range sreqs {
				s.reply <- false
			}
			continue
		}
		batch = store.Batch{JobID: m.job.ID, Round: m.job.Round, Elapsed: m.elapsed(), Released: m.unreleased,
			DoneThrough: m.c.frontier.through(), Starts: batch.Starts[:0], Interrupted: batch.Interrupted[:0],
			StartedAt: m.startedAt, Finish: finish}
		for _, s := range sreqs {
			batch.Starts = append(batch.Starts, store.Start{Seq: s.task.Seq, At: s.at})
		}
		// Isolated tasks still running after the results above were sent:
		// their marks come after the waited starts, so Started lines up.
		// Tasks still running: all of them when this commit happens
		// anyway, else only those due for their marks.
		var next time.Duration
		batch.Starts, next = m.slots.unmarked(batch.Starts, len(sreqs) == 0 && len(outs) == 0)
		if next > 0 {
			markTimer.Reset(next)
		}
		records, recordOut = records[:0], recordOut[:0]
		for i, o := range outs {
			if o.interrupted {
				batch.Interrupted = append(batch.Interrupted, o.task.Seq)
			} else {
				records = append(records, o.res)
				recordOut = append(recordOut, i)
			}
		}
		batch.Results = records
		if len(batch.Starts) == 0 && len(records) == 0 && len(batch.Interrupted) == 0 {
			continue // only the close, or a task that has finished already
		}
		marks = m.c.cfg.released.pending(marks[:0])
		batch.Marks = marks
		committed, err := m.commit(ctx, batch)
		if err != nil {
			failed = err
			cancel(err)
			for _, s := range sreqs {
				s.reply <- false
			}
			continue
		}
		m.c.cfg.released.recorded(marks...)
		m.c.cfg.onCommit()
		if len(batch.Starts) > 0 {
			failpoint.Hit(failpoint.AfterTaskStart) // a task is durably running
		}
		done = done[:0]
		for i, s := range sreqs {
			s.reply <- committed.Started[i]
			if !committed.Started[i] {
				done = append(done, s.task.Seq)
			}
		}
		for _, o := range outs {
			if !o.res.RetryAt.IsZero() {
				m.c.frontier.waiting(o.task.Seq)
				m.c.retries.wait() // before resolved: the producer must see it waits
			}
			done = append(done, o.task.Seq)
		}
		m.c.retries.resolved(done)
		m.unreleased = store.Span{}
		for i, cb := range committed.Callbacks {
			m.c.frontier.finished(cb.TaskSeq)
			ev := outs[recordOut[committed.ResultIndex[i]]].event
			ev.CallbackID = cb.ID
			m.c.release(m.job.ID, ev)
			if m.unreleased.From == 0 {
				m.unreleased.From = cb.ID
			}
			m.unreleased.To = cb.ID
		}
		m.done += int64(len(committed.Callbacks))
		if cb := committed.JobCallback; cb != nil {
			ev := jobEvent(committed.Job)
			ev.CallbackID = cb.ID
			m.c.release(m.job.ID, ev)
			m.finished = &committed.Job
			m.unreleased = store.Span{From: cb.ID, To: cb.ID}
		}
	}
	return failed
}
