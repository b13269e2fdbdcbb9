// Package store is the seam between pcd's engine and a database: the
// types of pcd's durable state (jobs, their tasks, results, the callback
// outbox) and Store, the interface a database implements for the engine.
//
// Store is the whole of what a database must do for pcd: JobStore creates,
// schedules and finishes jobs; TaskStore pages tasks to a runner and
// commits what it did (CompleteTasks, the group commit: each result with
// its callback record, and the job's completion with the batch that makes
// its last task final); Outbox serves the callback records by id, to the
// runner and to sinks; Upkeep checks and prunes; Runners is the runner
// lock and wake-ups.
//
// The rules of jobs and tasks are written here once, and every store
// applies them inside the transaction that makes the change (rules.go):
// the final state of a job (FinalState), when a job is complete
// (Complete), what cancel, retry, pause and kill may do (CanCancel,
// CanRetry, CanPause, CanKill), how interruptions count (Interruption),
// how a batch's final results count (Finals), and which runner may take
// a job (KindSet, MissingKinds). What differs per database, the SQL,
// claims, locks and wake-ups, is each driver's.
//
// store/sqlite is the embedded implementation, one runner per file;
// store/postgres the shared one, several runners on one database. The
// conformance suite in store/storetest checks any implementation through
// the interface alone, and engine's differential test runs random
// sequences of operations on both and compares what a user sees.
//
// A store knows nothing of goroutines or task kinds: payloads and callback
// messages are JSON bytes to it. Errors that callers act on are the
// sentinel errors here (ErrBusy, ErrDiskFull, ErrNotFound, ...), wrapped
// with %w, whichever database returned them.
package store
