package engine

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/pcd-dev/pcd/engine/process"
	"github.com/pcd-dev/pcd/store"
)

// MaxInterrupts is how many restarts in a row may interrupt a task before
// it fails.
const MaxInterrupts = 3

// Recover prepares a database for a new runner. First it kills whatever a
// dead runner's tasks left running (see process.KillLeftovers), so that no task
// runs twice at once. Then tasks that were running when the last runner
// died go back to pending, with the interruption counted, and a task
// interrupted MaxInterrupts times fails. Call it once, holding the runner
// lock, before running anything.
func recoverRunner(ctx context.Context, db store.Store, log *slog.Logger) (store.Recovered, error) {
	groups, err := db.RunningGroups(ctx)
	if err != nil {
		return store.Recovered{}, err
	}
	procs := make([]process.Group, len(groups))
	for i, g := range groups {
		procs[i] = process.Group{Pgid: g.Pgid, Start: g.PStart}
	}
	killed, err := process.KillLeftovers(procs, func(ids []string) (map[string]bool, error) {
		return db.KnownTasks(ctx, ids)
	}, 10*time.Second)
	if err != nil {
		return store.Recovered{}, fmt.Errorf("recover: %w", err)
	}
	if killed > 0 && log != nil {
		log.Warn("killed processes left running by the last runner's tasks", "processes", killed)
	}
	rec, err := db.Recover(ctx, MaxInterrupts, func(jobUUID string, t store.Task, reason string) ([]byte, error) {
		return taskEvent(jobUUID, t, store.Failed, 0, nil, reason).MarshalJSON()
	})
	if err != nil {
		return store.Recovered{}, err
	}
	if log != nil {
		logTakeover(log, rec)
	}
	cleanStaged(ctx, db, log)
	return rec, nil
}

// logTakeover says what a recovery took over: a line for each gone runner
// that is known by name (a shared database), or one line for all.
func logTakeover(log *slog.Logger, rec store.Recovered) {
	if rec.Requeued+rec.Failed == 0 {
		return
	}
	if len(rec.Runners) == 0 {
		log.Warn("took over the tasks of a runner that stopped or died", "requeued", rec.Requeued, "failed", rec.Failed)
		return
	}
	for _, g := range rec.Runners {
		jobs := g.Jobs
		more := 0
		if len(jobs) > 5 {
			jobs, more = jobs[:5], len(jobs)-5
		}
		list := strings.Join(jobs, ",")
		if more > 0 {
			list += fmt.Sprintf(" and %d more", more)
		}
		log.Warn("took over the started tasks of a runner that stopped or died",
			"runner", g.ID, "host", g.Host, "pid", g.PID, "tasks", g.Tasks, "jobs", list)
	}
	if rec.Failed > 0 {
		log.Warn("tasks failed: interrupted by too many runner deaths in a row", "failed", rec.Failed)
	}
}

// cleanStaged deletes the half-written jobs of submits that died. It
// only logs a failure: the next start tries again, and staging jobs are
// invisible meanwhile.
func cleanStaged(ctx context.Context, db store.Store, log *slog.Logger) {
	n, err := db.CleanStaged(ctx)
	if log == nil {
		return
	}
	if err != nil && ctx.Err() == nil {
		log.Warn("delete a half-written job of a submit that died", "err", err)
	}
	if n > 0 {
		log.Warn("deleted the half-written jobs of submits that died", "jobs", n)
	}
}
