package engine

import (
	"github.com/pcd-dev/pcd/engine/jobfile"
)

// The job file format lives in engine/jobfile; these are its names in
// engine, for programs that import engine alone.
type (
	// JobFile is a job to submit: its settings and its tasks.
	JobFile = jobfile.JobFile
	// TaskSpec is one task of a job file.
	TaskSpec = jobfile.TaskSpec
	// RetrySpec is how a task retries, set per job or per task.
	RetrySpec = jobfile.RetrySpec
	// BackoffSpec is an exponential backoff with jitter.
	BackoffSpec = jobfile.BackoffSpec
	// Schedule is when a job runs.
	Schedule = jobfile.Schedule
	// Halt is when a job stops early, as GNU parallel's --halt.
	Halt = jobfile.Halt
	// Duration reads seconds (a JSON number) or a Go duration string.
	Duration = jobfile.Duration
	// ExecPayload is the exec kind's payload.
	ExecPayload = jobfile.ExecPayload
	// Limits are what one command may use (memory, cpus).
	Limits = jobfile.Limits
	// ByteSize is a number of bytes, read as 536870912 or "512MiB".
	ByteSize = jobfile.ByteSize
)

// Defaults of a job that leaves them out.
const (
	DefaultWorkers     = jobfile.DefaultWorkers
	DefaultQueueSize   = jobfile.DefaultQueueSize
	DefaultBackoffBase = jobfile.DefaultBackoffBase
	DefaultBackoffCap  = jobfile.DefaultBackoffCap
)

var (
	// ErrBadJob marks input that does not describe a valid job.
	ErrBadJob = jobfile.ErrBadJob
	// ErrPayloadTooLarge is returned for a payload over the registry's
	// limit.
	ErrPayloadTooLarge = jobfile.ErrPayloadTooLarge
)

// ReadJobFile reads and checks a job file against the registry (see
// jobfile.Read): it keeps none of the tasks in memory.
func ReadJobFile(path string, reg *Registry) (JobFile, error) { return jobfile.Read(path, reg) }

// ParseJobFile reads and checks a job file held in memory, as an HTTP
// request's body, and keeps its tasks (see jobfile.Parse).
func ParseJobFile(data []byte, reg *Registry) (JobFile, error) { return jobfile.Parse(data, reg) }

// ParseHalt reads --halt, as GNU parallel does.
func ParseHalt(s string) (Halt, error) { return jobfile.ParseHalt(s) }

// badJob is an ErrBadJob error that reads as the message alone.
// ParseByteSize reads a size: "512MiB", "2G", "1048576".
func ParseByteSize(s string) (ByteSize, error) { return jobfile.ParseByteSize(s) }

func badJob(format string, a ...any) error { return jobfile.Errorf(format, a...) }
