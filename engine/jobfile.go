package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

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
	Tasks     []TaskSpec `json:"tasks"`
}

// TaskSpec is one task of a job file.
type TaskSpec struct {
	Kind    string          `json:"kind"`
	Payload json.RawMessage `json:"payload"`
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
		nj.Tasks[i] = t.newTask()
	}
	return nj
}

// newTask stores the payload compacted, and an absent one as null.
func (t TaskSpec) newTask() store.NewTask {
	payload := t.Payload
	if len(payload) == 0 {
		payload = json.RawMessage("null")
	} else {
		var buf bytes.Buffer
		if json.Compact(&buf, payload) == nil {
			payload = buf.Bytes()
		}
	}
	return store.NewTask{Kind: t.Kind, Payload: payload}
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
