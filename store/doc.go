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
// store/sqlite is the embedded implementation. The conformance suite in
// store/storetest checks any implementation through the interface alone.
//
// A store knows nothing of goroutines or task kinds: payloads and callback
// messages are JSON bytes to it. Errors that callers act on are the
// sentinel errors here (ErrBusy, ErrDiskFull, ErrNotFound, ...), wrapped
// with %w, whichever database returned them.
package store
