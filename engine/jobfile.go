package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/pcd-dev/pcd/store"
)

// ErrBadJob marks input that does not describe a valid job. Errors that
// wrap it read as the problem alone.
var ErrBadJob = errors.New("bad job")

type badJobError struct{ err error }

func (e badJobError) Error() string        { return e.err.Error() }
func (e badJobError) Unwrap() error        { return e.err }
func (e badJobError) Is(target error) bool { return target == ErrBadJob }

func badJob(format string, a ...any) error { return badJobError{fmt.Errorf(format, a...)} }

// JobFile is the JSON job file format:
//
//	{"name": "nightly", "workers": 25, "queue_size": 100,
//	 "tasks": [{"kind": "sleep", "payload": {"secs": 0.25}}, ...]}
//
// name, workers and queue_size are optional.
type JobFile struct {
	Name      string     `json:"name"`
	Workers   int        `json:"workers"`
	QueueSize int        `json:"queue_size"`
	RetrySpec            // the defaults of every task
	Sinks                // the job's own callback destinations
	Tasks     []TaskSpec `json:"tasks"`
}

// TaskSpec is one task of a job file.
type TaskSpec struct {
	Kind    string          `json:"kind"`
	Payload json.RawMessage `json:"payload"`
	RetrySpec
}

// RetrySpec is how a task retries, set per job or per task.
type RetrySpec struct {
	MaxAttempts int          `json:"max_attempts,omitempty"`
	Backoff     *BackoffSpec `json:"backoff,omitempty"`
	Timeout     Duration     `json:"timeout,omitempty"`
}

// BackoffSpec is an exponential backoff with jitter: the wait before
// attempt n+1 is up to base×2^(n-1), at most cap.
type BackoffSpec struct {
	Base Duration `json:"base"`
	Cap  Duration `json:"cap"`
}

// Defaults of a backoff given without its fields, or of max_attempts > 1
// with no backoff.
const (
	DefaultBackoffBase = time.Second
	DefaultBackoffCap  = 5 * time.Minute
	maxAttemptsLimit   = 1000
)

// Validate checks the settings.
func (r RetrySpec) Validate() error {
	if r.MaxAttempts < 0 || r.MaxAttempts > maxAttemptsLimit {
		return fmt.Errorf("max_attempts must be between 1 and %d, got %d", maxAttemptsLimit, r.MaxAttempts)
	}
	if b := r.Backoff; b != nil {
		if b.Base < 0 || b.Cap < 0 || (b.Cap > 0 && b.Base > b.Cap) {
			return fmt.Errorf("backoff: want 0 < base <= cap, got base %v, cap %v", time.Duration(b.Base), time.Duration(b.Cap))
		}
	}
	return nil
}

// over fills what r leaves unset from def.
func (r RetrySpec) over(def RetrySpec) store.Retry {
	if r.MaxAttempts == 0 {
		r.MaxAttempts = def.MaxAttempts
	}
	if r.Backoff == nil {
		r.Backoff = def.Backoff
	}
	if r.Timeout == 0 {
		r.Timeout = def.Timeout
	}
	out := store.Retry{MaxAttempts: max(r.MaxAttempts, 1), Timeout: time.Duration(r.Timeout)}
	if out.MaxAttempts > 1 {
		out.BackoffBase, out.BackoffCap = DefaultBackoffBase, DefaultBackoffCap
		if r.Backoff != nil {
			if r.Backoff.Base > 0 {
				out.BackoffBase = time.Duration(r.Backoff.Base)
			}
			if r.Backoff.Cap > 0 {
				out.BackoffCap = time.Duration(r.Backoff.Cap)
			}
			out.BackoffCap = max(out.BackoffCap, out.BackoffBase)
		}
	}
	return out
}

// ParseJobFile reads and validates a job file against the registry. Every
// error wraps ErrBadJob and names the place: a line and column, or a task
// number.
func ParseJobFile(r io.Reader, reg *Registry) (JobFile, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return JobFile{}, err
	}
	var jf JobFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&jf); err != nil {
		return JobFile{}, badJob("%w", describeJSONError(data, err))
	}
	if dec.More() {
		line, col := position(data, int(dec.InputOffset()))
		return JobFile{}, badJob("line %d, column %d: unexpected data after the job object", line, col)
	}
	if err := jf.Validate(reg); err != nil {
		return JobFile{}, err
	}
	return jf, nil
}

// Validate checks the job's settings and every task's kind and payload.
func (jf JobFile) Validate(reg *Registry) error {
	if jf.Workers < 0 {
		return badJob("workers must be positive, got %d", jf.Workers)
	}
	if jf.QueueSize < 0 {
		return badJob("queue_size must be positive, got %d", jf.QueueSize)
	}
	if err := jf.RetrySpec.Validate(); err != nil {
		return badJob("%w", err)
	}
	if err := jf.Sinks.Validate(); err != nil {
		return badJob("%w", err)
	}
	if len(jf.Tasks) == 0 {
		return badJob("no tasks: want \"tasks\": [{\"kind\": ..., \"payload\": ...}, ...]")
	}
	for i, t := range jf.Tasks {
		if t.Kind == "" {
			return badJob("task %d: missing \"kind\"", i+1)
		}
		if err := reg.Validate(t.Kind, t.Payload); err != nil {
			return badJob("task %d: %w", i+1, err)
		}
		if err := t.RetrySpec.Validate(); err != nil {
			return badJob("task %d: %w", i+1, err)
		}
	}
	return nil
}

// NewJob turns the file into a job to create, with workers and queue size
// defaulted where the file left them out.
func (jf JobFile) NewJob() store.NewJob {
	nj := store.NewJob{Name: jf.Name, Workers: jf.Workers, QueueSize: jf.QueueSize, Tasks: make([]store.NewTask, len(jf.Tasks))}
	if nj.Workers == 0 {
		nj.Workers = DefaultWorkers
	}
	if nj.QueueSize == 0 {
		nj.QueueSize = DefaultQueueSize
	}
	for i, t := range jf.Tasks {
		nj.Tasks[i] = t.newTask(jf.RetrySpec)
	}
	nj.Sinks = jf.Sinks.Encode()
	return nj
}

// Encode is the sinks as stored with a job; nil for none.
func (s Sinks) Encode() []byte {
	if s.Empty() {
		return nil
	}
	b, _ := json.Marshal(s)
	return b
}

// newTask stores the payload compacted, and an absent one as null, with
// the job's retry defaults under the task's own.
func (t TaskSpec) newTask(def RetrySpec) store.NewTask {
	payload := t.Payload
	if len(payload) == 0 {
		payload = json.RawMessage("null")
	} else {
		var buf bytes.Buffer
		if json.Compact(&buf, payload) == nil {
			payload = buf.Bytes()
		}
	}
	return store.NewTask{Kind: t.Kind, Payload: payload, Retry: t.RetrySpec.over(def)}
}

// describeJSONError adds a line and column to encoding/json's errors.
func describeJSONError(data []byte, err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		line, col := position(data, int(syn.Offset))
		return fmt.Errorf("line %d, column %d: %s", line, col, syn.Error())
	case errors.As(err, &typ):
		line, col := position(data, int(typ.Offset))
		return fmt.Errorf("line %d, column %d: %w", line, col, jsonFieldError(err))
	case errors.Is(err, io.EOF):
		return errors.New("empty input: want a JSON job object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("unexpected end of input: the JSON is cut short")
	}
	if msg, ok := strings.CutPrefix(err.Error(), "json: "); ok {
		return errors.New(msg)
	}
	return err
}

// position converts a byte offset to a 1-based line and column.
func position(data []byte, offset int) (line, col int) {
	offset = min(max(offset, 0), len(data))
	before := data[:offset]
	line = bytes.Count(before, []byte("\n")) + 1
	col = offset - bytes.LastIndexByte(before, '\n')
	return line, col
}
