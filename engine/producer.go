package engine

import (
	"context"
	"time"

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
		// Take the wake channel and the seal before reading the page, so a
		// task added in between is never missed.
		wake := c.cfg.Wake.C()
		if !job.Sealed {
			j, err := c.db.Job(ctx, job.ID)
			if err != nil {
				return err
			}
			job.Sealed = j.Sealed
		}
		page, err := c.db.PendingTasks(ctx, job.ID, after, job.QueueSize)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			if job.Sealed {
				return nil
			}
			// An open job: wait for its producer to add tasks or seal it.
			timer := time.NewTimer(c.cfg.PollEvery)
			select {
			case <-wake:
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
				return context.Cause(ctx)
			case <-c.drain:
				timer.Stop()
				return nil
			}
			timer.Stop()
			continue
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
