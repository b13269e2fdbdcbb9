// Package engine runs pcd's jobs, durably.
//
// A Runner owns a database's work, with one lifecycle: OpenRunner takes
// the runner lock, finishes the integrity check, recovers what a dead
// runner left and listens for wake-ups; Run runs every job (a daemon) and
// RunJob one job (pcd run); Stop stops softly, then hard when its context
// ends; Close releases everything.
//
// Inside, a JobController runs one job: a producer streams the job's
// pending tasks from the store into a bounded queue, a pool of consumers
// runs them by their Kind (from a Registry: the built-in sleep, noop,
// fail and exec, and a program's own), and a completer commits results in
// batches and releases each callback (Config.OnEvent) after its commit.
// Deliveries deliver the callbacks to hooks and webhooks; Watch tails them.
//
// Submit validates a job as pcd submit does and creates it. The engine
// never prints; it reports through callbacks and a *slog.Logger.
package engine
