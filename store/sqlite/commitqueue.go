package sqlite

import (
	"context"
	"sync"

	"github.com/pcd-dev/pcd/store"
)

// commitQueue merges the group commits of jobs that run at once into one
// transaction. The database has one writer, so a job's commit waits while
// another's runs anyway; what waits meanwhile is written together next,
// with one fsync instead of one each. A daemon draining one-task jobs
// overlaps a job's commit with the start of the next, and their commits
// then share the transactions.
//
// The first caller to find the queue idle leads: it takes every batch
// waiting, its own included, commits them, hands each caller its result,
// and passes the lead to the first that came in meanwhile. A caller's
// commit thus never waits for more than the group before its own.
type commitQueue struct {
	mu      sync.Mutex
	busy    bool
	waiting []*pendingCommit
}

// pendingCommit is one caller's batch in the queue.
type pendingCommit struct {
	batch store.Batch
	out   store.Committed
	err   error
	// wake is closed when the batch is committed (done) or when its
	// caller is to lead the next group.
	wake chan struct{}
	done bool
}

// do commits p with run, alone or in a group with the batches waiting.
func (q *commitQueue) do(ctx context.Context, p *pendingCommit, run func(context.Context, []*pendingCommit)) {
	q.mu.Lock()
	q.waiting = append(q.waiting, p)
	if q.busy {
		q.mu.Unlock()
		<-p.wake
		if p.done {
			return
		}
		q.mu.Lock() // this caller leads now; busy stays set
	}
	q.busy = true
	group := q.waiting
	q.waiting = nil
	q.mu.Unlock()

	run(ctx, group)

	q.mu.Lock()
	for _, g := range group {
		if g != p {
			g.done = true
			close(g.wake)
		}
	}
	if len(q.waiting) > 0 {
		close(q.waiting[0].wake) // not done: it leads
	} else {
		q.busy = false
	}
	q.mu.Unlock()
}
