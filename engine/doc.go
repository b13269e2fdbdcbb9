// Package engine runs pcd's jobs, durably. A job is a batch of tasks; each
// task is run by its kind, and each result commits with its task
// callback; the job's callback follows its last task's. A process killed
// at any moment loses nothing: the next runner resumes the job.
//
// # The Client
//
// A program, pcd's commands and its HTTP server all use one object, the
// Client. It is built from a store (store/sqlite for one file,
// store/postgres for several machines) and a RunnerConfig: the Registry
// of task kinds, the Logger, and the limits.
//
//	db, _ := sqlite.Open(ctx, "jobs.db", sqlite.Options{})
//	reg := engine.NewRegistry()
//	reg.Register("resize", engine.KindOf(resize)) // a kind of your own
//	client := engine.NewClient(db, engine.RunnerConfig{Config: engine.Config{Registry: reg}})
//
// Submitting needs no runner: Submit validates a job as pcd submit does
// and writes it whole or not at all; SubmitTx writes it in a transaction
// of the caller's own (a *sql.Tx on SQLite, a pgx.Tx on PostgreSQL), so
// that the job commits with the caller's writes or not at all;
// SubmitStream commits NDJSON tasks as they are read.
//
// Running: Start makes the client the runner of its database and, for a
// daemon (RoleDaemon), runs every job in the background until Stop; Run
// does the same in the foreground; RunJob (RoleRun) runs one job to its
// end in this process, as pcd run does. Stop stops softly, then hard
// when its context ends; Close releases everything.
//
// Managing: Cancel (it returns once the job's tasks have stopped), Retry,
// Pause, Resume, Kill (one task), SetGroup; each wakes the runners
// itself. Reading: Job, Jobs, Tasks, Task, and the overview's counts.
// Following: Subscribe and Watch deliver each callback once it commits,
// in commit order, resuming from a callback id.
//
// Jobs are named by their id (Job.UUID, as every event carries it) or a
// unique prefix of it. The rules of what each operation may do, and in
// which state, are package store's, the same on every database.
//
// # Task kinds
//
// A Kind runs one task: the built-in sleep, noop, fail and exec (a
// command, with its output), and a program's own (Func, or KindOf for
// typed arguments, validated at submit). A runner takes only the jobs
// whose every kind it knows; the others wait, with the reason in pcd
// status, for a runner that knows them. So a program's own kinds can
// share a database with pcd daemon, and with other programs.
//
// # Inside
//
// A runner's daemon schedules jobs (priorities, groups, start times,
// dependencies); each job runs under a controller: a producer pages the
// job's pending tasks from the store into a bounded queue, consumers run
// them by their kind, and a completer commits results in batches (the
// group commit) and releases each callback (Config.OnEvent) after its
// commit. Callback delivery to hooks and webhooks is engine/sink;
// process handling (groups, the subreaper, the fence) is engine/process;
// the job file format (JobFile and its checks) is engine/jobfile, whose
// types have their names here too.
//
// The engine never prints; it reports through callbacks and a
// *slog.Logger.
package engine
