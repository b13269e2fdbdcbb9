package engine

import (
	"context"
	"time"

	"github.com/pcd-dev/pcd/store"
)

// completer commits results in batches (group commit) and releases each
// task's callback only after its batch commits.
type completer struct {
	c       *JobController
	job     store.Job
	elapsed func() time.Duration

	// undelivered is the span of callbacks released since the last commit;
	// the next transaction marks them delivered, so delivery bookkeeping
	// costs no commit of its own.
	undelivered store.Span
	done        int64
}

// run consumes results until the channel closes. After a commit fails it
// cancels the run and discards what still arrives, so no consumer blocks.
func (m *completer) run(ctx context.Context, results <-chan outcome, cancel context.CancelCauseFunc) error {
	var (
		failed  error
		batch   = make([]outcome, 0, m.c.cfg.MaxBatch)
		records = make([]store.Result, 0, m.c.cfg.MaxBatch)
	)
	for o := range results {
		batch = append(batch[:0], o)
	fill:
		for len(batch) < m.c.cfg.MaxBatch {
			select {
			case o, ok := <-results:
				if !ok {
					break fill
				}
				batch = append(batch, o)
			default:
				break fill
			}
		}
		if failed != nil {
			continue
		}
		records = records[:0]
		for _, o := range batch {
			records = append(records, o.res)
		}
		cbs, err := m.c.db.CompleteTasks(ctx, store.Batch{
			JobID: m.job.ID, Round: m.job.Round, Results: records,
			Elapsed: m.elapsed(), Delivered: m.undelivered,
		})
		if err != nil {
			failed = err
			cancel(err)
			continue
		}
		m.undelivered = store.Span{}
		// cbs is the subsequence of batch whose tasks were not final yet.
		i := 0
		for _, cb := range cbs {
			for batch[i].task.Seq != cb.TaskSeq {
				i++
			}
			ev := batch[i].event
			ev.CallbackID = cb.ID
			m.c.cfg.OnEvent(ev)
			if m.undelivered.From == 0 {
				m.undelivered.From = cb.ID
			}
			m.undelivered.To = cb.ID
		}
		m.done += int64(len(cbs))
	}
	return failed
}
