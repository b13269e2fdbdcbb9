package engine

import (
	"context"
	"log/slog"

	"github.com/pcd-dev/pcd/store"
)

// MaxInterrupts is how many restarts in a row may interrupt a task before
// it fails.
const MaxInterrupts = 3

// Recover prepares a database for a new runner: tasks that were running
// when the last runner died go back to pending, with the interruption
// counted, and a task interrupted MaxInterrupts times fails. Call it once,
// holding the runner lock, before running anything.
func Recover(ctx context.Context, db *store.DB, log *slog.Logger) error {
	requeued, failed, err := db.Recover(ctx, MaxInterrupts, func(jobUUID string, t store.Task, reason string) ([]byte, error) {
		return Event{Type: store.EventTask, JobID: jobUUID, Task: &TaskEvent{
			ID: t.UUID, Number: t.Seq, Kind: t.Kind, State: store.Failed, Attempts: t.Attempts, Error: reason,
		}}.MarshalJSON()
	})
	if err != nil {
		return err
	}
	if requeued+failed > 0 && log != nil {
		log.Warn("recovered tasks interrupted by the last stop", "requeued", requeued, "failed", failed)
	}
	return nil
}
