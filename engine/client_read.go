package engine

import (
	"context"
	"time"

	"github.com/pcd-dev/pcd/engine/sink"
	"github.com/pcd-dev/pcd/store"
)

// What a Client reads, for pcd's commands, its HTTP server and its
// metrics. Each is one consistent read of the database.

// Counts counts the jobs in each state, with their tasks.
func (c *Client) Counts(ctx context.Context) (map[store.State]store.JobTally, error) {
	return c.db.CountJobs(ctx)
}

// Unfinished sums the unfinished jobs: how many, and one row that adds up
// their counts.
func (c *Client) Unfinished(ctx context.Context) (n int, sum store.Job, err error) {
	return c.db.UnfinishedSummary(ctx)
}

// UnfinishedJobs lists the jobs not finished yet.
func (c *Client) UnfinishedJobs(ctx context.Context) ([]store.Job, error) {
	return c.db.UnfinishedJobs(ctx)
}

// Runners lists the runners of the database: the live ones, and those
// gone lately.
func (c *Client) Runners(ctx context.Context) ([]store.RunnerInfo, error) {
	return c.db.ListRunners(ctx)
}

// RunnerAlive says whether a runner works the database now.
func (c *Client) RunnerAlive(ctx context.Context) bool { return c.db.RunnerAlive(ctx) }

// Size is the database's size in bytes, where the store knows it.
func (c *Client) Size() int64 { return c.db.Size() }

// Throughput reads the counts of finished tasks per span of time since a
// time, oldest first.
func (c *Client) Throughput(ctx context.Context, since time.Time) ([]store.Throughput, error) {
	return c.db.Throughput(ctx, since)
}

// Callbacks reads up to limit callback records after the id after, of
// the jobs given (every job if none), in id order.
func (c *Client) Callbacks(ctx context.Context, after int64, jobs []store.Job, limit int) ([]store.Callback, error) {
	var ids []int64
	for _, j := range jobs {
		ids = append(ids, j.ID)
	}
	return c.db.CallbacksAfter(ctx, after, ids, limit)
}

// LastCallbackID is the id of the newest callback record.
func (c *Client) LastCallbackID(ctx context.Context) (int64, error) {
	return c.db.LastCallbackID(ctx)
}

// Attempts lists a job's failed attempts.
func (c *Client) Attempts(ctx context.Context, job store.Job) ([]store.Attempt, error) {
	return c.db.Attempts(ctx, job.ID)
}

// Deliveries lists the deliveries of a job's callbacks to its sinks.
func (c *Client) Deliveries(ctx context.Context, job store.Job) ([]store.DeliveryRow, error) {
	return c.db.Deliveries(ctx, job.ID)
}

// pendingDeliveries counts the callbacks of a job that its own sinks have
// not delivered (nor given up on) yet.
func (c *Client) PendingDeliveries(ctx context.Context, job store.Job) (int, error) {
	return sink.Pending(ctx, c.db, job)
}

// sinkBacklog counts, per sink, the callbacks it has yet to deliver.
func (c *Client) SinkBacklog(ctx context.Context) (map[string]int64, error) {
	return sink.Backlog(ctx, c.db)
}

// DeadDeliveries counts the callbacks each sink gave up on.
func (c *Client) DeadDeliveries(ctx context.Context) (map[string]int64, error) {
	return c.db.DeadDeliveries(ctx)
}

// SinkCursors are the sinks' delivery cursors: the last callback id each
// has dealt with.
func (c *Client) SinkCursors(ctx context.Context) (map[string]int64, error) {
	return c.db.SinkCursors(ctx)
}

// JobDeps are the jobs a job waits for.
func (c *Client) JobDeps(ctx context.Context, job store.Job) ([]store.Job, error) {
	return c.db.JobDeps(ctx, job.ID)
}

// SealOrphan seals an open job whose submitter is gone, and says whether
// it did.
func (c *Client) SealOrphan(ctx context.Context, job store.Job) (bool, error) {
	sealed, err := c.db.SealOrphan(ctx, job.ID)
	if sealed {
		c.wake()
	}
	return sealed, err
}

// prune deletes the jobs that finished before a time, as pcd prune does.
func (c *Client) Prune(ctx context.Context, before time.Time, force, vacuum bool) (PruneResult, error) {
	return prune(ctx, c.db, c.cfg.SpoolDir, before, force, vacuum)
}
