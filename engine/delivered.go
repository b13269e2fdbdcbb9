package engine

import "sync"

// Delivered remembers, within one process, the newest callback id released
// for each job. A run that fails before it can record deliveries (the disk
// is full, say) is retried; the memo keeps the retry from releasing the
// same callbacks again. Across processes, the database's delivered_at does
// that job, and delivery stays at-least-once.
type Delivered struct {
	mu   sync.Mutex
	last map[int64]int64
}

// NewDelivered returns an empty memo.
func NewDelivered() *Delivered { return &Delivered{last: map[int64]int64{}} }

func (d *Delivered) seen(jobID, id int64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return id <= d.last[jobID]
}

func (d *Delivered) mark(jobID, id int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if id > d.last[jobID] {
		d.last[jobID] = id
	}
}
