package engine

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/pcd-dev/pcd/store"
)

// troubleLog is the environment problem a runner waits out: a full disk,
// a write lock another process holds, a database server out of reach.
// Many parts of a runner notice the same outage at once (each job's group
// commit, the sinks, the look for gone runners); it is told once when it
// starts and once when it is over (troubleHandler), and it paces the
// retries: the wait after each failure in a row doubles, from a sixteenth
// of the most.
type troubleLog struct {
	kind   atomic.Pointer[error]
	streak atomic.Int32
	// told is the kind last told, and overAt when it was over (unix ns).
	told   atomic.Pointer[error]
	overAt atomic.Int64
}

// troubleTail is how long after a problem is over an error of the same
// kind is still its tail, not a new problem: after a server restart, each
// pooled connection that died with it fails once, on its first use, and
// some are used only after the first commit has succeeded again.
const troubleTail = 10 * time.Second

// troubleKind is the problem err is an instance of, and how it is told;
// nil for any other error.
func troubleKind(err error) (kind error, says string) {
	switch {
	case err == nil:
		return nil, ""
	case errors.Is(err, store.ErrDiskFull):
		return store.ErrDiskFull, "the disk is full: stopped taking work until space returns; nothing committed is lost"
	case errors.Is(err, store.ErrUnavailable):
		return store.ErrUnavailable, "lost the connection to the database server: retrying with backoff; nothing committed is lost"
	case errors.Is(err, store.ErrBusy):
		return store.ErrBusy, "another process holds the database's write lock: waiting and retrying; nothing is lost"
	case errors.Is(err, store.ErrLockConflict):
		return store.ErrLockConflict, "the database server ended a transaction over a lock conflict: retrying; nothing is lost"
	}
	return nil, ""
}

// starts records kind as the problem now, and says whether it is new: not
// the one being told, nor the tail of the one just over.
func (t *troubleLog) starts(kind error) bool {
	prev := t.kind.Swap(&kind)
	if prev != nil && *prev == kind {
		return false
	}
	if told := t.told.Load(); prev == nil && told != nil && *told == kind &&
		time.Since(time.Unix(0, t.overAt.Load())) < troubleTail {
		t.kind.CompareAndSwap(&kind, nil) // still over: no second "resumed"
		return false
	}
	t.told.Store(&kind)
	return true
}

// report logs a job run's failure and returns how long to wait before the
// next try, at most most.
func (t *troubleLog) report(log *slog.Logger, path string, job store.Job, err error, most time.Duration) time.Duration {
	n := min(t.streak.Add(1), 5)
	wait := most >> (5 - n)
	if kind, _ := troubleKind(err); kind == nil {
		log.Error("job run failed; retrying", "job", job.UUID, "err", err, "in", wait)
	} else {
		log.Warn("a job's run stopped", "db", path, "err", err, "retry_in", wait)
	}
	return wait
}

// over ends the problem, if any, after a commit that succeeded.
func (t *troubleLog) over(log *slog.Logger) {
	t.streak.Store(0)
	if t.kind.Load() != nil && t.kind.Swap(nil) != nil {
		t.overAt.Store(time.Now().UnixNano())
		log.Info("the database takes writes again; resumed")
	}
}

// troubleHandler tells an environment problem once: the first warning or
// error whose "err" is one (troubleKind) becomes the problem's own line,
// with the original message as "during"; the next ones, until the problem
// is over, go to the debug level.
type troubleHandler struct {
	slog.Handler
	t *troubleLog
}

func (h troubleHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return h.Handler.Handle(ctx, r)
	}
	var err error
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" {
			err, _ = a.Value.Any().(error)
		}
		return err == nil
	})
	kind, says := troubleKind(err)
	if kind == nil {
		return h.Handler.Handle(ctx, r)
	}
	if h.t.starts(kind) {
		level := slog.LevelWarn
		if kind == store.ErrDiskFull {
			level = slog.LevelError
		}
		told := slog.NewRecord(r.Time, level, says, r.PC)
		told.AddAttrs(slog.String("during", r.Message))
		r.Attrs(func(a slog.Attr) bool {
			told.AddAttrs(a)
			return true
		})
		return h.Handler.Handle(ctx, told)
	}
	if !h.Handler.Enabled(ctx, slog.LevelDebug) {
		return nil
	}
	r.Level = slog.LevelDebug
	return h.Handler.Handle(ctx, r)
}

func (h troubleHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return troubleHandler{Handler: h.Handler.WithAttrs(attrs), t: h.t}
}

func (h troubleHandler) WithGroup(name string) slog.Handler {
	return troubleHandler{Handler: h.Handler.WithGroup(name), t: h.t}
}
