// Package postgres is pcd's shared store: a store.Store on a PostgreSQL
// database (pgx, a connection pool), for several daemons on several
// machines working one queue.
//
// Each runner registers a row with a heartbeat; its lease (Options.Lease)
// is how long it may go without one before the others take its claimed
// and running tasks over (Recover), counting an interruption for each
// task it had started. A runner claims tasks a page at a time; results
// commit only while the claim is the runner's own, so a runner that lost
// its lease (a frozen process, a cut network) has its results discarded
// and its commands killed by its fence (engine/process). Every writer
// takes its locks in one order (the job's claim lock, its rows, the
// job's row, the callback-id lock), so that writers never deadlock.
// Wake-ups are LISTEN/NOTIFY; a job submitted in the caller's own
// transaction (CreateJobTx) wakes the runners when that transaction
// commits.
//
// Each schema (the URL's search_path) is a database of its own to pcd:
// its own locks, channel and migrations (migrations/postgres). The rules
// of jobs and tasks are package store's; this package holds the SQL,
// claims, locks and wake-ups.
package postgres
