package store

import (
	"errors"
	"fmt"
	"iter"
	"time"

	"github.com/google/uuid"
)

// ErrNotFound is returned when a job or task does not exist.
var ErrNotFound = errors.New("not found")

// State is the state of a job or a task.
type State string

// The states. Succeeded, Failed and Cancelled are final.
const (
	Pending   State = "pending"
	Running   State = "running"
	Succeeded State = "succeeded"
	Failed    State = "failed"
	Cancelled State = "cancelled"
)

// Final reports whether s is an end state.
func (s State) Final() bool { return s == Succeeded || s == Failed || s == Cancelled }

// Job is a row of the jobs table.
type Job struct {
	// ID is the database's row id: it orders jobs by submission and pages
	// lists (JobFilter.Before). The Client, the commands and the API name
	// a job by its UUID.
	ID        int64
	UUID      string
	Name      string
	State     State
	Sealed    bool // every task has been added
	Round     int
	Workers   int
	QueueSize int
	Total     int64
	Succeeded int64
	Failed    int64
	Cancelled int64
	// Elapsed is the monotonic run time summed over every process that ran
	// the job, as last saved.
	Elapsed    time.Duration
	CreatedAt  time.Time
	StartedAt  time.Time // zero until first started
	FinishedAt time.Time // zero until finished
	Sinks      []byte    // the job's own callback sinks, JSON; nil for none
	// DoneThrough is a lower bound of the job's finished prefix: every task
	// with seq up to it is final. A runner starts reading pending tasks
	// there instead of at the first task.
	DoneThrough int64
	// Paused jobs start no task until resumed (pcd pause, pcd resume).
	Paused bool
	// Halting is why a runner halted the job (its --halt policy was met),
	// "" until then: no runner starts a task of it, and the one that
	// halted it cancels the tasks left.
	Halting string
	Control
	// After says whether the job waits for others (JobDeps) and how.
	After AfterMode
	// Kinds are the kinds of the job's tasks, sorted (nil if not
	// recorded): a runner takes the job only if it knows every one.
	Kinds []string
	// Waiting says why the job waits for another runner than the one
	// that wrote it (a kind that runner does not know); "" if none did.
	// It matters only while the job is pending.
	Waiting string
}

// Control is how a job is scheduled besides its order of submission.
type Control struct {
	Priority int       // a job of higher priority starts first
	StartAt  time.Time // not before this; zero: at once
	Group    string    // the job's group; "" is the default one
	Halt     string    // when to stop the job early, as parallel's --halt; "" never
}

// AfterMode is how a job waits for the jobs it depends on.
type AfterMode int

// The modes: no dependencies, until they succeed (a dependency that
// fails or is cancelled cancels the job), until they end however they do.
const (
	AfterNone AfterMode = iota
	AfterSuccess
	AfterAny
)

// Group is a named group's limits; 0 is no limit of its own.
type Group struct {
	Name    string
	MaxJobs int // jobs of the group running at once in a runner
	Workers int // tasks of the group's jobs running at once in a runner
	// Memory (bytes) and CPUs bound what the group's commands use
	// together in a runner; 0 is no limit.
	Memory int64
	CPUs   float64
}

// RunnableQuery asks for the next jobs to run.
type RunnableQuery struct {
	Skip  map[int64]bool // jobs to leave out (the runner's own)
	Limit int
	Now   time.Time // jobs whose StartAt is later wait
	// FullGroups are groups with no free slot: their jobs wait.
	FullGroups []string
	// Kinds are the task kinds the runner knows: a job with a kind
	// outside them waits for another runner. Nil takes any job.
	Kinds []string
}

// Done is the number of tasks in a final state.
func (j Job) Done() int64 { return j.Succeeded + j.Failed + j.Cancelled }

// Finished reports whether the job's completion has committed.
func (j Job) Finished() bool { return !j.FinishedAt.IsZero() }

// NewTask is a task to add to a job.
type NewTask struct {
	Kind    string
	Payload []byte // JSON
	Retry   Retry
}

// Retry is how a task retries and how long an attempt may take.
type Retry struct {
	MaxAttempts int           // 0 or 1: no retry
	BackoffBase time.Duration // the first wait; it doubles, with jitter
	BackoffCap  time.Duration // the longest wait
	Timeout     time.Duration // per attempt; 0 for none
}

// NewJob describes a job to create.
type NewJob struct {
	Name      string
	Workers   int
	QueueSize int
	Tasks     []NewTask
	// More, if set, yields further tasks after Tasks, in batches that
	// CreateJob does not keep. They go into the same transaction: an error
	// from More leaves nothing written.
	More iter.Seq2[[]NewTask, error]
	// Open leaves the job unsealed, for a producer that streams more
	// tasks with AppendTasks and then calls SealJob.
	Open bool
	// Key, if set, makes the submit idempotent: a second job with the same
	// key is not created, and CreateJob returns the first with ErrDuplicate.
	Key string
	// Sinks are the job's own callback sinks, JSON, or nil.
	Sinks []byte
	Control
	// After are jobs that must end before this one starts: succeed, or,
	// with AfterAny, end however they do.
	After    []int64
	AfterAny bool
}

// SubmitChunk bounds how long one transaction of a big submit holds the
// write lock: other writers (runners, cancels, other submits) wait at
// most about this long behind it.
const SubmitChunk = 200 * time.Millisecond

// ErrDuplicate is returned with the existing job when a job with the same
// key exists.
var ErrDuplicate = errors.New("a job with this key exists")

// Errors for job references and state changes.
var (
	ErrAmbiguous = errors.New("ambiguous id")
	ErrConflict  = errors.New("job is not in a state that allows this")
	ErrSealed    = errors.New("job is sealed")
)

// JobTally counts jobs of one state and their tasks.
type JobTally struct {
	Jobs  int64
	Tasks int64 // their tasks
	Done  int64 // of those, the final ones
	// Waiting: of the jobs, those that wait for a runner that knows their
	// task kinds (Job.Waiting is set).
	Waiting int64
	// Paused: of the jobs, those paused (Job.Paused).
	Paused int64
}

// AfterModeOf is how a new job waits for others.
func AfterModeOf(nj NewJob) AfterMode {
	switch {
	case len(nj.After) == 0:
		return AfterNone
	case nj.AfterAny:
		return AfterAny
	}
	return AfterSuccess
}

// NewJobRow is the row of a job about to be created from nj, before a
// store writes it: every store creates jobs with it. Job ids are random
// (v4), so that a short prefix names a job; a store makes its task ids
// time-ordered (v7), so that their index grows at the end.
func NewJobRow(nj NewJob) (Job, error) {
	if nj.Workers <= 0 || nj.QueueSize <= 0 {
		return Job{}, fmt.Errorf("create job: workers and queue size must be positive")
	}
	id, err := uuid.NewRandom()
	if err != nil {
		return Job{}, fmt.Errorf("create job: %w", err)
	}
	return Job{
		UUID: id.String(), Name: nj.Name, State: Pending, Sealed: !nj.Open,
		Workers: nj.Workers, QueueSize: nj.QueueSize, Total: int64(len(nj.Tasks)),
		CreatedAt: time.Now(), Sinks: nj.Sinks, Control: nj.Control, After: AfterModeOf(nj),
	}, nil
}
