package engine

import (
	"context"
	"sync"
	"time"

	"github.com/pcd-dev/pcd/store"
)

// flushThroughputEvery is how often a runner adds the results it
// committed to the database's throughput counts.
const flushThroughputEvery = time.Second

// throughput counts the task results a runner commits, per
// store.ThroughputSpan, until it adds them to the database's counts
// (store.AddThroughput) for the dashboard's chart. The counts ride on no
// group commit, so they cost the pipeline nothing: a runner that is
// killed loses the last second of them, and no task or callback.
type throughput struct {
	mu    sync.Mutex
	spans map[int64]store.Throughput // by the span's unix second
}

func newThroughput() *throughput {
	return &throughput{spans: map[int64]store.Throughput{}}
}

// add counts the results one commit made final, at now.
func (t *throughput) add(now time.Time, succeeded, failed int) {
	if t == nil || succeeded+failed == 0 {
		return
	}
	at := now.Truncate(store.ThroughputSpan)
	t.mu.Lock()
	sp := t.spans[at.Unix()]
	sp.At = at
	sp.Succeeded += int64(succeeded)
	sp.Failed += int64(failed)
	t.spans[at.Unix()] = sp
	t.mu.Unlock()
}

// take removes and returns the counts not yet in the database.
func (t *throughput) take() []store.Throughput {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.spans) == 0 {
		return nil
	}
	out := make([]store.Throughput, 0, len(t.spans))
	for _, sp := range t.spans {
		out = append(out, sp)
	}
	clear(t.spans)
	return out
}

// putBack keeps counts that could not be written for the next flush,
// but none older than the database keeps: a database that refuses
// writes for days does not grow them without bound.
func (t *throughput) putBack(spans []store.Throughput) {
	oldest := time.Now().Add(-store.ThroughputKept)
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, sp := range spans {
		if sp.At.Before(oldest) {
			continue
		}
		cur := t.spans[sp.At.Unix()]
		cur.At = sp.At
		cur.Succeeded += sp.Succeeded
		cur.Failed += sp.Failed
		t.spans[sp.At.Unix()] = cur
	}
}

// flush adds the counts to the database.
func (t *throughput) flush(ctx context.Context, db store.Store) error {
	spans := t.take()
	if len(spans) == 0 {
		return nil
	}
	if err := db.AddThroughput(ctx, spans); err != nil {
		t.putBack(spans)
		return err
	}
	return nil
}

// keep flushes the counts every flushThroughputEvery until ctx ends, then
// once more; the returned function ends it and waits for that.
func (t *throughput) keep(ctx context.Context, db store.Store, log func(error)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(flushThroughputEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				last, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				defer cancel()
				if err := t.flush(last, db); err != nil {
					log(err)
				}
				return
			case <-tick.C:
				if err := t.flush(ctx, db); err != nil && ctx.Err() == nil {
					log(err)
				}
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
