package engine

import (
	"context"
	"time"

	"github.com/pcd-dev/pcd/store"
)

// WatchOptions configure Watch.
type WatchOptions struct {
	// Jobs are the jobs to follow, by id (or a unique prefix); none means
	// every job.
	Jobs []string
	// jobIDs are Jobs' row ids (Client.Watch finds them).
	jobIDs []int64
	// Follow keeps watching after the jobs finish, for new jobs too.
	Follow bool
	// After is the callback id to resume after; 0 starts from the first.
	After int64
	// PollEvery is how often to check the database for commits; default 20ms.
	PollEvery time.Duration
	// OnEvent receives each committed callback once, in id order.
	OnEvent func(Event) error
	// OnCallback, if set, receives each record instead of OnEvent, as
	// committed: for a reader that passes the JSON on (see CallbackJSON)
	// and need not decode it.
	OnCallback func(store.Callback) error
	// Flush, if set, runs after each catch-up, before Watch waits for the
	// next commit: output may be buffered until then.
	Flush func() error
	// OnTrouble, if set, is told once when the database cannot be read
	// for a while (the server restarts; Watch waits and goes on from the
	// last callback it saw), and once, with nil, when it can again.
	OnTrouble func(error)
	// OnJobs, if set, receives the watched jobs' rows before each catch-up,
	// for progress displays. For an all-jobs watch, one row that adds up
	// the unfinished jobs' counts (none when there are none).
	OnJobs func([]store.Job)
}

// watchCallbacks streams committed callback records, resuming from the last id it
// saw, so it follows across runner restarts with no event twice and none
// missed. Without Follow it returns once every watched job has finished
// (for an all-jobs watch: once no job is unfinished) and its callbacks
// are out.
func watchCallbacks(ctx context.Context, db store.Store, opts WatchOptions) error {
	if opts.PollEvery <= 0 {
		opts.PollEvery = 20 * time.Millisecond
	}
	changes, err := db.Changes(ctx)
	if err != nil {
		return err
	}
	defer changes.Close()
	after := opts.After
	catchUp := func() error {
		for {
			cbs, err := db.CallbacksAfter(ctx, after, opts.jobIDs, 1000)
			if err != nil {
				return err
			}
			for _, cb := range cbs {
				if err := deliverWatched(cb, opts); err != nil {
					return err
				}
				after = cb.ID
			}
			if len(cbs) < 1000 {
				if opts.Flush != nil {
					return opts.Flush()
				}
				return nil
			}
		}
	}
	ticker := time.NewTicker(opts.PollEvery)
	defer ticker.Stop()
	pass := func() (done bool, err error) {
		// Read the jobs before catching up: a job seen finished here has
		// its last callback committed, so the catch-up below gets it.
		jobs, err := watchedJobs(ctx, db, opts.jobIDs)
		if err != nil {
			return false, err
		}
		if opts.OnJobs != nil {
			opts.OnJobs(jobs)
		}
		if err := catchUp(); err != nil {
			return false, err
		}
		if !opts.Follow && allFinished(jobs, opts.jobIDs) {
			return true, nil
		}
		for changed := false; !changed; {
			select {
			case <-ctx.Done():
				return false, ctx.Err()
			case <-ticker.C:
			}
			if changed, err = changes.Poll(ctx); err != nil {
				return false, err
			}
		}
		return false, nil
	}
	var trouble watchTrouble
	for {
		done, err := pass()
		switch {
		case done:
			return nil
		case err == nil:
			trouble.over(opts.OnTrouble)
		case !store.Temporary(err) || ctx.Err() != nil:
			return err
		default:
			// The server restarts, or the database is locked: go on
			// from the last callback seen once it answers again.
			if err := trouble.wait(ctx, err, opts.OnTrouble); err != nil {
				return err
			}
		}
	}
}

// watchTrouble paces a watch's retries while the database cannot be read,
// and tells OnTrouble once when it starts and once when it is over.
type watchTrouble struct{ streak int }

func (w *watchTrouble) wait(ctx context.Context, err error, tell func(error)) error {
	if w.streak == 0 && tell != nil {
		tell(err)
	}
	wait := min(50*time.Millisecond<<min(w.streak, 5), time.Second)
	w.streak++
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(wait):
		return nil
	}
}

func (w *watchTrouble) over(tell func(error)) {
	if w.streak > 0 && tell != nil {
		tell(nil)
	}
	w.streak = 0
}

func deliverWatched(cb store.Callback, opts WatchOptions) error {
	if opts.OnCallback != nil {
		return opts.OnCallback(cb)
	}
	ev, err := EventFromCallback(cb)
	if err != nil {
		return err
	}
	return opts.OnEvent(ev)
}

func watchedJobs(ctx context.Context, db store.Store, ids []int64) ([]store.Job, error) {
	if len(ids) == 0 {
		// One row of sums, not a row per waiting job: a watch of
		// thousands of waiting jobs costs what a watch of one does.
		n, sum, err := db.UnfinishedSummary(ctx)
		if err != nil || n == 0 {
			return nil, err
		}
		return []store.Job{sum}, nil
	}
	jobs := make([]store.Job, 0, len(ids))
	for _, id := range ids {
		j, err := db.Job(ctx, id)
		if err != nil {
			return nil, err
		}
		jobs = append(jobs, j)
	}
	return jobs, nil
}

func allFinished(jobs []store.Job, ids []int64) bool {
	if len(ids) == 0 {
		return len(jobs) == 0
	}
	for _, j := range jobs {
		if !j.Finished() {
			return false
		}
	}
	return true
}

// subscribe calls fn with each committed callback whose id is after
// after, in callback order, and goes on with new ones as they commit,
// until ctx ends (it returns ctx's error) or fn returns an error (it
// returns that). Every runner's callbacks come through, across runner
// restarts; to resume, pass the last CallbackID fn saw. Delivery to fn is
// exactly once per Subscribe call, and at least once across calls that
// resume from an id saved before fn's work was.
func subscribe(ctx context.Context, db store.Store, after int64, fn func(Event) error) error {
	return watchCallbacks(ctx, db, WatchOptions{Follow: true, After: after, OnEvent: fn})
}
