package store

import (
	"context"
	"io"
	"time"
)

// Store is the seam between the engine and a database: the durable
// operations the engine runs jobs with, and nothing of SQLite.
// store/sqlite and store/postgres implement it.
// The methods are grouped by what they serve.
type Store interface {
	JobStore
	TaskStore
	Outbox
	Upkeep
	Runners

	// Path names the database, for messages.
	Path() string
	Close() error
}

// Runners coordinates the processes that run a database's work and
// those that hand it work.
type Runners interface {
	// LockRunner makes this process a runner, in a role ("daemon",
	// "run"), until Release. On SQLite one process at a time is: another
	// holding the lock is a *LockedError naming it.
	LockRunner(role string) (Releaser, error)
	// ListenWake calls notify each time another process wakes the runner
	// (Wake), until Close. Only a runner listens.
	ListenWake(notify func()) (io.Closer, error)
	// Wake tells the runner that work was committed or a job cancelled;
	// best effort: a runner also looks by itself every second.
	Wake() error
	// RunnerAlive says whether a runner works the database now: one
	// listens for wake-ups (SQLite), or has a fresh heartbeat
	// (PostgreSQL).
	RunnerAlive(ctx context.Context) bool
	// ListRunners lists the runners of the database: the live ones, and
	// those gone lately (a runner that died shows as gone).
	ListRunners(ctx context.Context) ([]RunnerInfo, error)
	// Shared says that several runners may work the database at once
	// (PostgreSQL): a runner then takes over the tasks of runners that
	// are gone (Recover) while it runs, not only when it starts.
	Shared() bool
}

// RunnerInfo is a runner of a database (a daemon, a pcd run).
type RunnerInfo struct {
	ID        int64 // 0 where runners have no id (SQLite)
	Role      string
	Host      string
	PID       int
	StartedAt time.Time // zero if unknown
	// Heartbeat is the runner's last sign of life; zero where runners do
	// not heartbeat (SQLite: the lock says it is alive).
	Heartbeat time.Time
	Alive     bool
	Running   int    // tasks it has started and not finished
	Version   string // the runner's pcd version, "" if unknown
}

// Recovered is what a Recover took over.
type Recovered struct {
	Requeued, Failed int // started tasks run again, and failed for their interruptions
	// Runners are the gone runners whose started tasks were taken over,
	// where runners are known (a shared database); SQLite's last runner
	// is not named.
	Runners []GoneRunner
	// From holds, for each job whose started tasks were taken over, the
	// lowest of their seqs: a runner of the job reads its tasks again
	// from there, to run them ahead of the rest.
	From map[int64]int64
}

// GoneRunner is a runner that stopped or died with tasks it had started.
type GoneRunner struct {
	ID    int64
	Host  string
	PID   int
	Tasks int      // its started tasks, taken over
	Jobs  []string // their jobs' ids
}

// Releaser releases what it holds.
type Releaser interface{ Release() error }

// Leased is a runner's hold (from LockRunner) that can run out: on a
// shared database a runner that could not renew its lease in time (the
// network was cut) has lost it, and the others may take its tasks over.
// Lost closes then. The runner must stop its tasks at once; it may run
// again only as a new runner (LockRunner again).
type Leased interface {
	Releaser
	Lost() <-chan struct{}
}

// JobStore creates, finds and finishes jobs.
type JobStore interface {
	// CreateJob writes a job and its tasks, whole or not at all.
	CreateJob(ctx context.Context, nj NewJob) (Job, error)
	// AppendTasks adds tasks to an open job; SealJob ends it.
	AppendTasks(ctx context.Context, jobID int64, tasks []NewTask) error
	SealJob(ctx context.Context, jobID int64) error
	// SealOrphan seals an open job whose submitter is gone.
	SealOrphan(ctx context.Context, jobID int64) (bool, error)
	// CleanStaged deletes the half-written jobs of dead submitters.
	CleanStaged(ctx context.Context) (int, error)
	Job(ctx context.Context, id int64) (Job, error)
	// OpenJobs are the unfinished, unsealed jobs; RunnableJobs the next
	// jobs to run, by priority then age: not paused, due to start, in a
	// group with room, and with every job they wait for ended.
	OpenJobs(ctx context.Context) ([]Job, error)
	RunnableJobs(ctx context.Context, q RunnableQuery) ([]Job, error)
	// MarkWaiting writes, into each unfinished job that has a kind
	// outside known, why it waits (reason, of the kinds missing), for
	// pcd status and pcd tasks; it says how many jobs it changed.
	MarkWaiting(ctx context.Context, known []string, reason func(missing []string) string) (int64, error)
	// JobDeps are the jobs a job waits for.
	JobDeps(ctx context.Context, jobID int64) ([]Job, error)
	// PauseJobs pauses (or resumes) the unfinished jobs among ids, every
	// unfinished job if ids is empty, and says how many changed.
	PauseJobs(ctx context.Context, ids []int64, paused bool) (int64, error)
	// HaltJob records that an unfinished job halted, and why (the first
	// reason stays); every runner of it then starts no task of it.
	HaltJob(ctx context.Context, jobID int64, reason string) error
	// SetGroup writes a group's limits; Groups lists the groups that have
	// limits (a scheduling pass reads them: not the jobs).
	SetGroup(ctx context.Context, g Group) error
	Groups(ctx context.Context) ([]Group, error)
	UnfinishedSummary(ctx context.Context) (n int, sum Job, err error)
	// StopJob makes a job that a runner stops pending again.
	StopJob(ctx context.Context, id int64, elapsed time.Duration) error
	// FinishJob commits a job's final state and its job callback, once
	// every task is final (else ErrNotDone).
	FinishJob(ctx context.Context, jobID int64, elapsed time.Duration, released Span,
		message func(Job) ([]byte, error)) (Job, *Callback, error)
	// CancelJob cancels every unfinished task, with its callback, and
	// finishes the job, in one transaction.
	CancelJob(ctx context.Context, jobID int64, taskMessage func(Task) ([]byte, error),
		jobMessage func(Job) ([]byte, error)) (Job, error)
	JobsWithSinks(ctx context.Context, since time.Time) ([]Job, error)
	// RetryJob opens a new round for a finished job's failed and
	// cancelled tasks.
	RetryJob(ctx context.Context, jobID int64) (Job, error)
	// FindJob finds a job by its id or a unique prefix of it.
	FindJob(ctx context.Context, ref string) (Job, error)
	// ListJobs lists the jobs that f selects, newest first.
	ListJobs(ctx context.Context, f JobFilter) ([]Job, error)
	// CountJobs counts the jobs in each state, with their tasks.
	CountJobs(ctx context.Context) (map[State]JobTally, error)
	UnfinishedJobs(ctx context.Context) ([]Job, error)
}

// JobFilter selects jobs for ListJobs: those in State (any if empty)
// whose name holds Name (any if empty, case folded), with an id below
// Before (any if 0), at most Limit of them. With Waiting, only those that
// wait for a runner that knows their task kinds.
type JobFilter struct {
	State   State
	Name    string
	Before  int64
	Limit   int
	Waiting bool
}

// TaskStore pages tasks to the producer and commits what the runner did.
type TaskStore interface {
	// PendingTasks pages the tasks without a result after afterSeq, by
	// seq, leaving out those waiting to retry after due.
	PendingTasks(ctx context.Context, jobID, afterSeq int64, limit int, due time.Time) ([]Task, error)
	// DueTasks are tasks whose retry is due at now; NextDue is when the
	// next one is; MinWaitingSeq the lowest waiting task (0 if none).
	DueTasks(ctx context.Context, jobID int64, now time.Time, limit int) ([]Task, error)
	NextDue(ctx context.Context, jobID int64) (due time.Time, ok bool, err error)
	MinWaitingSeq(ctx context.Context, jobID int64) (int64, error)
	// CompleteTasks is one group commit: start marks, results with their
	// callback records, requeued tasks, and maybe the job's completion.
	CompleteTasks(ctx context.Context, b Batch) (Committed, error)
	// Recover requeues or fails the tasks of runners that are gone: on
	// SQLite, whatever a runner before this one left; on a shared
	// database, those of runners whose lease ran out.
	Recover(ctx context.Context, maxInterrupts int,
		failMessage func(jobUUID string, t Task, reason string) ([]byte, error)) (Recovered, error)
	// RunningGroups lists the process groups of tasks that gone runners
	// on this host had started; KnownTasks says which of the task ids
	// (from the processes' cookies) are this database's and run by no
	// live runner. The new runner kills those processes before it
	// recovers their tasks; a live runner's are never among them.
	RunningGroups(ctx context.Context) ([]RunningGroup, error)
	KnownTasks(ctx context.Context, uuids []string) (map[string]bool, error)
	// Tasks lists a job's tasks with their state; TasksInState a page of
	// them after afterSeq, in seq order, only those in state unless it is
	// empty; Attempts its failed attempts; FindTask finds a task by its id
	// or a unique prefix.
	Tasks(ctx context.Context, jobID int64) ([]TaskRow, error)
	TasksInState(ctx context.Context, jobID int64, state State, afterSeq int64, limit int) ([]TaskRow, error)
	Attempts(ctx context.Context, jobID int64) ([]Attempt, error)
	FindTask(ctx context.Context, ref string) (TaskRow, error)
	// KillTask asks the runner of a running task to stop it (pcd kill):
	// it fails, or with requeue goes back to pending. A task that is not
	// running is ErrConflict. KillRequests are a job's asks, by seq (true
	// for requeue), for its runner.
	KillTask(ctx context.Context, jobID, seq int64, requeue bool) error
	KillRequests(ctx context.Context, jobID int64) (map[int64]bool, error)
}

// Outbox is the callback records, the runner's release cursor per job,
// and the sinks' cursors and deliveries.
type Outbox interface {
	Callbacks(ctx context.Context, jobID, afterID int64, unreleasedOnly bool) ([]Callback, error)
	CallbacksAfter(ctx context.Context, afterID int64, jobIDs []int64, limit int) ([]Callback, error)
	// CountCallbacks counts the callbacks after afterID of a job (of
	// every job if jobID is 0), of one event ("" for both).
	CountCallbacks(ctx context.Context, jobID, afterID int64, event string) (int64, error)
	LastCallbackID(ctx context.Context) (int64, error)
	UnreleasedJobs(ctx context.Context) ([]int64, error)
	MarkReleased(ctx context.Context, jobID int64, span Span) error
	MarkAllReleased(ctx context.Context, marks []Mark) error
	JobReleased(ctx context.Context, jobID int64) (bool, error)
	// LeaseSink takes, or renews, the right to deliver a sink's
	// callbacks, for this runner: false while another live runner holds
	// it. One runner at a time delivers a sink, in id order. On SQLite,
	// where one runner works the database, it is always true.
	LeaseSink(ctx context.Context, sink string) (bool, error)
	SinkCursor(ctx context.Context, sink string) (int64, error)
	SinkCursors(ctx context.Context) (map[string]int64, error)
	StartSink(ctx context.Context, sink string, from int64) error
	RecordDelivery(ctx context.Context, d Delivery) error
	DeliveryAttempts(ctx context.Context, sink string, callbackID int64) (int, error)
	Deliveries(ctx context.Context, jobID int64) ([]DeliveryRow, error)
	// DeadDeliveries counts the callbacks each sink gave up on.
	DeadDeliveries(ctx context.Context) (map[string]int64, error)
	// Changes reports commits by other processes, for pcd watch.
	Changes(ctx context.Context) (ChangeFeed, error)
}

// ChangeFeed says whether the database changed since the last Poll.
type ChangeFeed interface {
	Poll(ctx context.Context) (bool, error)
	Close() error
}

// Upkeep is the database's health and history.
type Upkeep interface {
	// CheckDeferred says Open checked only part of a large file; Check
	// checks the rest.
	CheckDeferred() bool
	Check(ctx context.Context) error
	FinishedBefore(ctx context.Context, t time.Time, after int64, limit int) ([]Job, error)
	DeleteJob(ctx context.Context, jobID int64) (int64, error)
	Reclaim(ctx context.Context, vacuum bool) (vacuumed bool, err error)
	Size() int64
	// AddThroughput adds counts of finished tasks to their spans of time
	// (and deletes the counts older than ThroughputKept); Throughput reads
	// the spans since a time, oldest first, leaving out the empty ones.
	AddThroughput(ctx context.Context, spans []Throughput) error
	Throughput(ctx context.Context, since time.Time) ([]Throughput, error)
}

// ThroughputSpan is the span of time one Throughput counts, and
// ThroughputKept how long the counts are kept.
const (
	ThroughputSpan = 10 * time.Second
	ThroughputKept = 7 * 24 * time.Hour
)

// Throughput counts the tasks that finished in the ThroughputSpan that
// starts at At (a multiple of the span in Unix time).
type Throughput struct {
	At        time.Time
	Succeeded int64
	Failed    int64 // failed or cancelled
}

// TxCreator is a store that can create a job inside a transaction its
// caller holds, so that the job commits with the caller's own writes
// (engine.Client.SubmitTx). Each store takes its own kind of transaction:
// a *sql.Tx on SQLite, a pgx.Tx on PostgreSQL; another kind is an error.
// The job is whole: no Open, no More.
type TxCreator interface {
	CreateJobTx(ctx context.Context, tx any, nj NewJob) (Job, error)
}
