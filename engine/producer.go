package engine

import (
	"context"

	"github.com/pcd-dev/pcd/store"
)

// produce streams the job's pending tasks, in seq order, into queue. Pages
// are read by key and are no larger than the queue, so memory stays
// bounded whatever the size of the job. It blocks while queue is full.
func (c *JobController) produce(ctx context.Context, job store.Job, queue chan<- store.Task) error {
	var after int64
	for {
		if c.draining() {
			return nil
		}
		page, err := c.db.PendingTasks(ctx, job.ID, after, job.QueueSize)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			return nil
		}
		for _, t := range page {
			select {
			case queue <- t:
			case <-ctx.Done():
				return context.Cause(ctx)
			case <-c.drain:
				return nil
			}
			if c.onProduce != nil {
				c.onProduce(t)
			}
			after = t.Seq
		}
	}
}
