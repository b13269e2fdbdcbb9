// Package jobfile reads and checks pcd's job files: a JSON object of the
// job's settings and its tasks, of any size, or a stream of tasks one
// JSON object a line. It refuses what encoding/json would let pass (see
// internal/strictjson) and places every error: a line and column, or a
// task number. A job file is checked against Kinds, the task kinds that
// the submitter knows, and turned into a store.NewJob.
package jobfile

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pcd-dev/pcd/engine/sink"
	"github.com/pcd-dev/pcd/internal/strictjson"
	"github.com/pcd-dev/pcd/store"
)

// ErrBadJob marks input that does not describe a valid job. Errors that
// wrap it read as the problem alone.
var ErrBadJob = errors.New("bad job")

// ErrPayloadTooLarge is returned for a payload over the size limit.
var ErrPayloadTooLarge = errors.New("payload over the size limit")

// LineSlack is what a task's JSON may hold besides its payload: the kind
// and the retry settings.
const LineSlack = 64 << 10

// Defaults of a job that leaves them out, from the classic
// producer-consumer lesson.
const (
	DefaultWorkers   = 25
	DefaultQueueSize = 100
)

// Kinds are the task kinds a job is checked against: their names, their
// payloads and the payloads' size limit (0: none).
type Kinds interface {
	Validate(kind string, payload json.RawMessage) error
	MaxPayload() int
}

type badJobError struct{ err error }

func (e badJobError) Error() string        { return e.err.Error() }
func (e badJobError) Unwrap() error        { return e.err }
func (e badJobError) Is(target error) bool { return target == ErrBadJob }

// Errorf is an ErrBadJob error that reads as the message alone.
func Errorf(format string, a ...any) error { return badJobError{fmt.Errorf(format, a...)} }

// JobFile is the JSON job file format:
//
//	{"name": "nightly", "workers": 25, "queue_size": 100,
//	 "tasks": [{"kind": "sleep", "payload": {"secs": 0.25}}, ...]}
//
// name, workers and queue_size are optional.
type JobFile struct {
	Name       string     `json:"name"`
	Workers    int        `json:"workers"`
	QueueSize  int        `json:"queue_size"`
	RetrySpec             // the defaults of every task
	sink.Sinks            // the job's own callback destinations
	Schedule              // when the job runs, and when it stops early
	Limits                // what each of its exec tasks may use
	Tasks      []TaskSpec `json:"tasks"`

	// Dir is the submitter's working directory, where the job's commands
	// run: an exec task with no "dir" runs there, and a relative one is
	// taken from there. Empty leaves payloads as they are.
	Dir string `json:"-"`
	// Key, if set, makes the submit idempotent (pcd submit --key): a
	// second job with the same key is not created.
	Key string `json:"-"`

	// file and count: a job read by Read, whose tasks stay there.
	file  string
	count int
}

// Schedule is when a job runs: its priority, its start time, its group,
// the jobs it waits for, and its --halt policy.
type Schedule struct {
	// Priority: a job of higher priority starts first, and takes a
	// daemon's free slots (--max-jobs) first.
	Priority int `json:"priority,omitempty"`
	// StartAt: the job starts no earlier (RFC 3339 in a job file).
	StartAt time.Time `json:"start_at,omitzero"`
	// Group is the job's group ("" is the default), with the limits of
	// pcd group set.
	Group string `json:"group,omitempty"`
	// After are jobs (ids or unique prefixes) that must succeed before
	// this one starts; if one fails or is cancelled, so is this job.
	// With AfterAny they need only to end, however they do.
	After    []string `json:"after,omitempty"`
	AfterAny bool     `json:"after_any,omitempty"`
	// Halt stops the job early, as GNU parallel's --halt ("now,fail=1").
	Halt string `json:"halt,omitempty"`
}

// Validate checks the schedule's settings.
func (s Schedule) Validate() error {
	if _, err := ParseHalt(s.Halt); err != nil {
		return err
	}
	if s.AfterAny && len(s.After) == 0 {
		return fmt.Errorf("after_any needs after: the jobs to wait for")
	}
	if len(s.Group) > 64 || strings.ContainsFunc(s.Group, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return fmt.Errorf("group %q: a group's name is at most 64 printable characters", s.Group)
	}
	return nil
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

// Read reads and validates a job file against the registry, for a
// file that may hold millions of tasks: it validates them all but keeps
// none in memory. The job's tasks are read again, in batches, as NewJob's
// store.NewJob creates the job. Every error about the content wraps
// ErrBadJob and names the place: a line and column, or a task number.
func Read(path string, reg Kinds) (JobFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return JobFile{}, err
	}
	defer f.Close()
	var jf JobFile
	limit := int64(0)
	if m := reg.MaxPayload(); m > 0 {
		limit = int64(m) + LineSlack
	}
	n, err := scanJobFile(f, limit, &jf, func(i int, t TaskSpec) error { return validateTask(i, t, reg) })
	if err != nil {
		if errors.Is(err, ErrBadJob) {
			return JobFile{}, err
		}
		return JobFile{}, Errorf("%w", describeJSONError(func(off int64) (int, int) { return filePosition(path, off) }, err))
	}
	jf.file, jf.count = path, n
	if err := jf.Validate(reg); err != nil {
		return JobFile{}, err
	}
	return jf, nil
}

// Parse reads and validates a job file held in memory (an HTTP
// request's body), as Read does a file; its tasks are kept.
func Parse(data []byte, reg Kinds) (JobFile, error) {
	var jf JobFile
	limit := int64(0)
	if m := reg.MaxPayload(); m > 0 {
		limit = int64(m) + LineSlack
	}
	var tasks []TaskSpec
	_, err := scanJobFile(bytes.NewReader(data), limit, &jf, func(i int, t TaskSpec) error {
		if err := validateTask(i, t, reg); err != nil {
			return err
		}
		tasks = append(tasks, t)
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrBadJob) {
			return JobFile{}, err
		}
		return JobFile{}, Errorf("%w", describeJSONError(func(off int64) (int, int) { return position(data, off) }, err))
	}
	jf.Tasks = tasks
	if err := jf.Validate(reg); err != nil {
		return JobFile{}, err
	}
	return jf, nil
}

// scanJobFile decodes a job object from r into jf, handing each task of its
// "tasks" array to each, numbered from 1, as it is read: the tasks are
// never all in memory. It returns the number of tasks. Other keys decode
// into jf as they would with json.Unmarshal, unknown ones refused.
//
// With taskLimit > 0, a task whose JSON runs past taskLimit bytes stops
// the reading there with ErrPayloadTooLarge: it is never held whole.
func scanJobFile(src source, taskLimit int64, jf *JobFile, each func(int, TaskSpec) error) (_ int, err error) {
	lim := &taskLimiter{r: src, limit: taskLimit}
	dec := json.NewDecoder(bufio.NewReaderSize(lim, 64<<10))
	dec.DisallowUnknownFields()
	tok, err := dec.Token()
	if err != nil {
		return 0, err // io.EOF: the input is empty
	}
	defer func() {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
	}()
	if tok != json.Delim('{') {
		return 0, errors.New(`want a JSON job object: {"tasks": [...]}`)
	}
	n, seen := 0, map[string]bool{}
	for dec.More() {
		lim.forget(dec.InputOffset())
		tok, err := dec.Token()
		if err != nil {
			return n, err
		}
		key, _ := tok.(string)
		if seen[key] {
			return n, fmt.Errorf("%q is given twice", key)
		}
		seen[key] = true
		if err := strictjson.For[JobFile]().Field([]byte(key)); err != nil {
			return n, err
		}
		if key != "tasks" {
			if err := decodeField(dec, src, jf, key); err != nil {
				return n, err
			}
			continue
		}
		if n, err = scanTasks(dec, src, lim, n, each); err != nil {
			return n, err
		}
	}
	if _, err := dec.Token(); err != nil { // }
		return n, err
	}
	end := dec.InputOffset()
	if _, err := dec.Token(); err != io.EOF {
		// Point at the first byte after the object that is not space.
		buf := make([]byte, 4096)
		k, _ := src.ReadAt(buf, end)
		skip := len(buf[:k]) - len(bytes.TrimLeft(buf[:k], " \t\r\n"))
		return n, trailingData{end + int64(skip)}
	}
	return n, nil
}

// scanTasks reads a job file's "tasks" array, after its key, handing each
// task to each, numbered on from n; it returns the number of tasks so far.
func scanTasks(dec *json.Decoder, src source, lim *taskLimiter, n int, each func(int, TaskSpec) error) (int, error) {
	if tok, err := dec.Token(); err != nil {
		return n, err
	} else if tok == nil {
		return n, nil // "tasks": null is no tasks
	} else if tok != json.Delim('[') {
		return n, errors.New(`"tasks" must be an array of tasks`)
	}
	for dec.More() {
		var t TaskSpec
		lim.start()
		start := dec.InputOffset()
		err := decodeAt(dec, src, &t)
		lim.active = false
		if errors.Is(err, ErrPayloadTooLarge) {
			return n, Errorf("task %d: longer than %d bytes: %w (the limit is %d bytes of payload, --max-payload)",
				n+1, lim.limit, ErrPayloadTooLarge, lim.limit-LineSlack)
		}
		if err == nil {
			// The decoder read the task once; its bytes, kept as they
			// passed, are checked for what it lets pass.
			end := dec.InputOffset()
			err = strictjson.Check(bytes.TrimLeft(lim.span(start, end), " \t\r\n,"), strictjson.For[TaskSpec]())
			lim.forget(end)
		}
		if err != nil {
			return n, taskError(n+1, err)
		}
		n++
		if err := each(n, t); err != nil {
			return n, err
		}
	}
	_, err := dec.Token() // ]
	return n, err
}

// source is a job file being scanned: read in order, and at an offset
// again to place a syntax error.
type source interface {
	io.Reader
	io.ReaderAt
}

// decodeAt is dec.Decode(v), with a syntax error placed in the file. The
// offset of a streaming Decoder's syntax error counts more than the bytes
// before it, so the value is read again, from where it starts, on its own.
func decodeAt(dec *json.Decoder, src source, v any) error {
	start := dec.InputOffset()
	err := dec.Decode(v)
	var syn *json.SyntaxError
	if !errors.As(err, &syn) {
		return err
	}
	buf := make([]byte, 1<<20)
	n, _ := src.ReadAt(buf, start)
	buf = buf[:n]
	skip := 0
	for skip < len(buf) && bytes.IndexByte([]byte(" \t\r\n,:"), buf[skip]) >= 0 {
		skip++
	}
	var raw json.RawMessage
	if again := json.NewDecoder(bytes.NewReader(buf[skip:])).Decode(&raw); errors.As(again, &syn) {
		return syntaxAt{start + int64(skip) + syn.Offset, syn}
	}
	return err
}

// syntaxAt is a syntax error at an offset of the whole file.
type syntaxAt struct {
	offset int64
	err    error
}

func (e syntaxAt) Error() string { return e.err.Error() }
func (e syntaxAt) Unwrap() error { return e.err }

// trailingData is what follows the job object, at offset.
type trailingData struct{ offset int64 }

func (e trailingData) Error() string { return "unexpected data after the job object" }

// errReadStopped ends a read of a job file whose reader went away.
var errReadStopped = errors.New("job file read stopped")

// decodeField decodes the value of one key of the job object into jf,
// with errors placed as if the whole object had been decoded.
func decodeField(dec *json.Decoder, src source, jf *JobFile, key string) error {
	var raw json.RawMessage
	if err := decodeAt(dec, src, &raw); err != nil {
		return err
	}
	if err := strictjson.Check(raw, nil); err != nil {
		return fmt.Errorf("%q: %w", key, err)
	}
	start := dec.InputOffset() - int64(len(raw))
	name, _ := json.Marshal(key)
	head := append(append([]byte{'{'}, name...), ':')
	one := json.NewDecoder(bytes.NewReader(append(append(head, raw...), '}')))
	one.DisallowUnknownFields()
	err := one.Decode(jf)
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) {
		typ.Offset += start - int64(len(head))
	}
	return err
}

// taskError names the task a decoding error is in.
func taskError(i int, err error) error {
	if errors.As(err, new(strictjson.Error)) {
		return Errorf("task %d: %w", i, err)
	}
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) {
		if strictjson.Field(typ.Field) == "" {
			return Errorf(`task %d: want an object {"kind": ..., "payload": ...}, got %s`, i, typ.Value)
		}
		return Errorf("task %d: %w", i, strictjson.FieldError(err))
	}
	if msg, ok := strings.CutPrefix(err.Error(), "json: "); ok && !errors.As(err, new(*json.SyntaxError)) {
		return Errorf("task %d: %s", i, msg)
	}
	return err
}

// Validate checks the job's settings and every task's kind and payload.
func (jf JobFile) Validate(reg Kinds) error {
	if err := jf.ValidateSettings(); err != nil {
		return err
	}
	if len(jf.Tasks) == 0 && jf.count == 0 {
		return Errorf("no tasks: want \"tasks\": [{\"kind\": ..., \"payload\": ...}, ...]")
	}
	for i, t := range jf.Tasks {
		if err := validateTask(i+1, t, reg); err != nil {
			return err
		}
	}
	return nil
}

// ValidateSettings checks the job's settings, not its tasks: those of a
// job whose tasks come as a stream.
func (jf JobFile) ValidateSettings() error {
	if jf.Workers < 0 {
		return Errorf("workers must be positive, got %d", jf.Workers)
	}
	if jf.QueueSize < 0 {
		return Errorf("queue_size must be positive, got %d", jf.QueueSize)
	}
	if err := jf.RetrySpec.Validate(); err != nil {
		return Errorf("%w", err)
	}
	if err := jf.Sinks.Validate(); err != nil {
		return Errorf("%w", err)
	}
	if err := jf.Schedule.Validate(); err != nil {
		return Errorf("%w", err)
	}
	if err := jf.Limits.Validate(); err != nil {
		return Errorf("%w", err)
	}
	return nil
}

// validateTask checks task number i's kind, payload and retry settings.
func validateTask(i int, t TaskSpec, reg Kinds) error {
	if t.Kind == "" {
		return Errorf("task %d: missing \"kind\"", i)
	}
	if err := reg.Validate(t.Kind, t.Payload); err != nil {
		return Errorf("task %d: %w", i, err)
	}
	if err := t.RetrySpec.Validate(); err != nil {
		return Errorf("task %d: %w", i, err)
	}
	return nil
}

// NewJob turns the file into a job to create, with workers and queue size
// defaulted where the file left them out. A job read by Read has its
// tasks read again, in batches, by the returned job's More.
func (jf JobFile) NewJob() store.NewJob {
	nj := store.NewJob{Name: jf.Name, Workers: jf.Workers, QueueSize: jf.QueueSize, Key: jf.Key,
		Tasks: make([]store.NewTask, len(jf.Tasks)), AfterAny: jf.AfterAny,
		Control: store.Control{Priority: jf.Priority, StartAt: jf.StartAt, Group: jf.Group, Halt: jf.Halt}}
	if nj.Workers == 0 {
		nj.Workers = DefaultWorkers
	}
	if nj.QueueSize == 0 {
		nj.QueueSize = DefaultQueueSize
	}
	for i, t := range jf.Tasks {
		nj.Tasks[i] = t.NewTask(jf.TaskDefaults())
	}
	if jf.file != "" {
		nj.More = jf.batches()
	}
	sinks := jf.Sinks
	if !sinks.Empty() && (sinks.OnTask != "" || sinks.OnJob != "") && sinks.Dir == "" {
		sinks.Dir = jf.Dir // the job's hooks run where it was submitted
	}
	nj.Sinks = sinks.Encode()
	return nj
}

// fileBatch is how many tasks of a job file are held at a time.
const fileBatch = 4096

// batches reads the tasks of the job file again, fileBatch at a time. It
// fails if the file no longer holds what Read validated.
func (jf JobFile) batches() iter.Seq2[[]store.NewTask, error] {
	return func(yield func([]store.NewTask, error) bool) {
		f, err := os.Open(jf.file)
		if err != nil {
			yield(nil, err)
			return
		}
		defer f.Close()
		var again JobFile
		cur := make([]store.NewTask, 0, fileBatch)
		n, err := scanJobFile(f, 0, &again, func(_ int, t TaskSpec) error {
			cur = append(cur, t.NewTask(jf.TaskDefaults()))
			if len(cur) < fileBatch {
				return nil
			}
			if !yield(cur, nil) {
				return errReadStopped
			}
			cur = cur[:0] // the store does not keep a batch
			return nil
		})
		switch {
		case errors.Is(err, errReadStopped):
			return
		case err == nil && n != jf.count:
			err = fmt.Errorf("job file %s changed while it was read: %d tasks, then %d", jf.file, jf.count, n)
		}
		if err != nil {
			yield(nil, err)
			return
		}
		if len(cur) > 0 {
			yield(cur, nil)
		}
	}
}

// TaskDefaults are what a job gives each of its tasks: its retry
// settings, under the task's own; and to an exec task, the directory it
// runs in (see JobFile.Dir) and the limits it has unless it sets its own.
type TaskDefaults struct {
	Retry  RetrySpec
	Dir    string
	Limits Limits
}

// TaskDefaults are what the job gives each of its tasks.
func (jf JobFile) TaskDefaults() TaskDefaults {
	return TaskDefaults{Retry: jf.RetrySpec, Dir: jf.Dir, Limits: jf.Limits}
}

// NewTask is the task to create. It stores the payload compacted, and an
// absent one as null, with the job's defaults under the task's own.
func (t TaskSpec) NewTask(def TaskDefaults) store.NewTask {
	payload := t.Payload
	if len(payload) == 0 {
		payload = json.RawMessage("null")
	} else {
		var buf bytes.Buffer
		if json.Compact(&buf, payload) == nil {
			payload = buf.Bytes()
		}
	}
	if t.Kind == "exec" && (def.Dir != "" || !def.Limits.IsZero()) {
		payload = execWith(payload, def)
	}
	return store.NewTask{Kind: t.Kind, Payload: payload, Retry: t.RetrySpec.over(def.Retry)}
}

// execWith gives an exec payload the job's defaults: the submitter's
// directory when it has none, joined with a relative one; the job's
// limits where it sets none. A payload that does not parse is left for
// the kind to refuse.
func execWith(payload json.RawMessage, def TaskDefaults) json.RawMessage {
	p, err := ParseExec(payload)
	if err != nil {
		return payload
	}
	if def.Dir != "" && !filepath.IsAbs(p.Dir) {
		p.Dir = filepath.Join(def.Dir, p.Dir)
	}
	p.Limits = p.Limits.Over(def.Limits)
	b, err := json.Marshal(p)
	if err != nil {
		return payload
	}
	return b
}

// taskLimiter counts the bytes read under a job file's decoder and fails
// the read once one task has taken more than limit. The decoder and its
// buffer read ahead, so the count is a little over the task's own size;
// limit has room for that.
type taskLimiter struct {
	r       io.Reader
	n, mark int64
	limit   int64
	active  bool
	// kept are the bytes read from offset keptFrom on, for span.
	kept     []byte
	keptFrom int64
}

// span is the input from offset start to end, which the decoder has
// read since the last forget.
func (l *taskLimiter) span(start, end int64) []byte {
	return l.kept[start-l.keptFrom : end-l.keptFrom]
}

// forget drops the bytes kept before offset, a chunk at a time.
func (l *taskLimiter) forget(offset int64) {
	if drop := int(offset - l.keptFrom); drop >= 64<<10 {
		l.kept = l.kept[:copy(l.kept, l.kept[drop:])]
		l.keptFrom = offset
	}
}

// start begins counting a task, from what the decoder has read so far.
func (l *taskLimiter) start() { l.mark, l.active = l.n, l.limit > 0 }

func (l *taskLimiter) Read(p []byte) (int, error) {
	if l.active && l.n-l.mark > l.limit+128<<10 {
		return 0, ErrPayloadTooLarge
	}
	k, err := l.r.Read(p)
	l.n += int64(k)
	l.kept = append(l.kept, p[:k]...)
	return k, err
}

// describeJSONError adds a line and column, from pos, to encoding/json's
// errors.
func describeJSONError(pos func(offset int64) (line, col int), err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var trail trailingData
	var at syntaxAt
	// where names the place; a line of its own (NDJSON, whose line the
	// caller names) gives its column alone.
	where := func(offset int64) string {
		line, col := pos(offset)
		if line == 0 {
			return fmt.Sprintf("column %d", col)
		}
		return fmt.Sprintf("line %d, column %d", line, col)
	}
	switch {
	case errors.Is(err, ErrBadJob):
		return err
	case errors.As(err, &at):
		return fmt.Errorf("%s: %s", where(at.offset), at.err.Error())
	case errors.As(err, &trail):
		return fmt.Errorf("%s: %s", where(trail.offset), trail.Error())
	case errors.As(err, &syn):
		return fmt.Errorf("%s: %s", where(syn.Offset), syn.Error())
	case errors.As(err, &typ):
		return fmt.Errorf("%s: %w", where(typ.Offset), strictjson.FieldError(err))
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
func position(data []byte, offset int64) (line, col int) {
	offset = min(max(offset, 0), int64(len(data)))
	before := data[:offset]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(offset) - bytes.LastIndexByte(before, '\n')
	return line, col
}

// filePosition is position for an offset in a file, read up to there.
func filePosition(path string, offset int64) (line, col int) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	data, _ := io.ReadAll(io.LimitReader(f, max(offset, 0)))
	return position(data, offset)
}

// ParseTask reads one task of an NDJSON stream, a line, and checks it
// against kinds; ok is false for a blank line. def are the job's (see
// JobFile.TaskDefaults).
func ParseTask(raw []byte, reg Kinds, def TaskDefaults) (store.NewTask, bool, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return store.NewTask{}, false, nil
	}
	var spec TaskSpec
	if json.Valid(raw) {
		if err := strictjson.Check(raw, strictjson.For[TaskSpec]()); err != nil {
			return store.NewTask{}, false, err
		}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		return store.NewTask{}, false, describeJSONError(func(off int64) (int, int) { _, col := position(raw, off); return 0, col }, err)
	}
	if dec.More() {
		return store.NewTask{}, false, errors.New("more than one JSON value on the line")
	}
	if spec.Kind == "" {
		return store.NewTask{}, false, errors.New(`missing "kind"`)
	}
	if err := reg.Validate(spec.Kind, spec.Payload); err != nil {
		return store.NewTask{}, false, err
	}
	if err := spec.RetrySpec.Validate(); err != nil {
		return store.NewTask{}, false, err
	}
	return spec.NewTask(def), true, nil
}
