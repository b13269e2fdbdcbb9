package engine

import (
	"context"
	"sync"

	"github.com/pcd-dev/pcd/store"
)

// releaseMemo remembers, within one process, the newest callback id released
// for each job until the database records it (the job's delivered cursor).
// A run that fails before it can record deliveries (the disk is full, say)
// is retried; the memo keeps the retry from releasing the same callbacks
// again. Across processes, the cursor does that job, and delivery stays
// at-least-once.
//
// A finished job's last mark need not cost a commit of its own: it rides
// on the next group commit of any job (Batch.Marks), or on Flush. Until
// then a crash releases that job callback again, which at-least-once
// delivery allows. The memo holds only marks not yet recorded, so it stays
// as small as the number of jobs running.
type releaseMemo struct {
	mu   sync.Mutex
	last map[int64]int64
}

// newReleaseMemo returns an empty memo.
func newReleaseMemo() *releaseMemo { return &releaseMemo{last: map[int64]int64{}} }

func (d *releaseMemo) seen(jobID, id int64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return id <= d.last[jobID]
}

func (d *releaseMemo) mark(jobID, id int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if id > d.last[jobID] {
		d.last[jobID] = id
	}
}

// pending lists the marks not yet recorded, appended to buf.
func (d *releaseMemo) pending(buf []store.Mark) []store.Mark {
	d.mu.Lock()
	defer d.mu.Unlock()
	for job, id := range d.last {
		buf = append(buf, store.Mark{JobID: job, To: id})
	}
	return buf
}

// recorded forgets marks the database now holds.
func (d *releaseMemo) recorded(marks ...store.Mark) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, m := range marks {
		if d.last[m.JobID] <= m.To {
			delete(d.last, m.JobID)
		}
	}
}

// Flush records every pending mark in one transaction.
func (d *releaseMemo) Flush(ctx context.Context, db store.Store) error {
	marks := d.pending(nil)
	if len(marks) == 0 {
		return nil
	}
	if err := db.MarkAllReleased(ctx, marks); err != nil {
		return err
	}
	d.recorded(marks...)
	return nil
}
