// Package store is pcd's durable state: jobs, their tasks, results, and
// the callback outbox.
//
// Store is the seam the engine uses, and the whole of what a database must
// do for pcd: JobStore creates, schedules and finishes jobs; TaskStore
// pages tasks to a runner and commits what it did (CompleteTasks, the group
// commit: each result with its callback record, and the job's completion
// with the batch that makes its last task final); Outbox serves the
// callback records by id, to the runner and to sinks; Upkeep checks and
// prunes; Runners is the runner lock and wake-ups. The conformance suite in store/storetest checks any
// implementation through the interface alone.
//
// DB is the SQLite implementation (Open). It has one writer connection,
// so every write is serialised, each write transaction begins IMMEDIATE,
// and a writer polls for the write lock so that it gets in between the
// chunks of a big submit; a small read-only pool serves queries, and
// Options.ReadOnly opens for reading only. The runner lock (AcquireRunnerLock)
// and the submit lock are files beside the database.
//
// The store knows nothing of goroutines or task kinds: payloads and
// callback messages are JSON bytes to it.
package store
