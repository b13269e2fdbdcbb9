package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/pcd-dev/pcd/store"
)

// Event is a callback: a task's final result, or a job's completion. Its
// JSON is flat; CallbackID is the outbox record's id, stable across
// deliveries, for receivers to drop duplicates.
type Event struct {
	CallbackID int64
	Type       string // store.EventTask or store.EventJob
	JobID      string // the job's uuid
	Task       *TaskEvent
	Job        *JobEvent
}

// TaskEvent is the task-completed callback's payload.
type TaskEvent struct {
	ID       string      `json:"task_id"`
	Number   int64       `json:"number"`
	Kind     string      `json:"kind"`
	State    store.State `json:"state"`
	TimeSecs float64     `json:"time_secs"`
	Attempts int         `json:"attempts"`
	// MayHaveRunTwice: a runner that had started the task died before its
	// result committed, so it may have run more often than Attempts says.
	MayHaveRunTwice bool            `json:"may_have_run_twice,omitempty"`
	Result          json.RawMessage `json:"result,omitempty"`
	Error           string          `json:"error,omitempty"`
}

// JobEvent is the job-completed callback's payload.
type JobEvent struct {
	Name        string      `json:"name,omitempty"`
	Outcome     store.State `json:"outcome"`
	ElapsedSecs float64     `json:"elapsed_secs"`
	Total       int64       `json:"total"`
	Succeeded   int64       `json:"succeeded"`
	Failed      int64       `json:"failed"`
	Cancelled   int64       `json:"cancelled"`
	// Reason says why a job ended early: a job it waited for failed, or
	// its --halt policy stopped it.
	Reason string `json:"reason,omitempty"`
}

type eventHeader struct {
	CallbackID int64  `json:"callback_id,omitempty"`
	Type       string `json:"event"`
	JobID      string `json:"job_id"`
}

// MarshalJSON writes the event as one flat object.
func (e Event) MarshalJSON() ([]byte, error) {
	h := eventHeader{CallbackID: e.CallbackID, Type: e.Type, JobID: e.JobID}
	switch {
	case e.Type == store.EventTask && e.Task != nil:
		return json.Marshal(struct {
			eventHeader
			*TaskEvent
		}{h, e.Task})
	case e.Type == store.EventJob && e.Job != nil:
		return json.Marshal(struct {
			eventHeader
			*JobEvent
		}{h, e.Job})
	}
	return nil, fmt.Errorf("event %q has no payload", e.Type)
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (e *Event) UnmarshalJSON(b []byte) error {
	var h eventHeader
	if err := json.Unmarshal(b, &h); err != nil {
		return err
	}
	*e = Event{CallbackID: h.CallbackID, Type: h.Type, JobID: h.JobID}
	switch h.Type {
	case store.EventTask:
		e.Task = new(TaskEvent)
		return json.Unmarshal(b, e.Task)
	case store.EventJob:
		e.Job = new(JobEvent)
		return json.Unmarshal(b, e.Job)
	}
	return fmt.Errorf("unknown event %q", h.Type)
}

// EventFromCallback decodes a callback record.
func EventFromCallback(cb store.Callback) (Event, error) {
	var e Event
	if err := json.Unmarshal(cb.Message, &e); err != nil {
		return Event{}, fmt.Errorf("callback %d: %w", cb.ID, err)
	}
	e.CallbackID = cb.ID
	return e, nil
}

// CallbackJSON appends to dst the event of a callback record as JSON, as
// MarshalJSON writes it with its callback id, without decoding it: the
// record's message is that JSON without the id, which comes first.
func CallbackJSON(dst []byte, cb store.Callback) ([]byte, error) {
	msg := cb.Message
	if len(msg) < 2 || msg[0] != '{' || msg[len(msg)-1] != '}' {
		return dst, fmt.Errorf("callback %d: the message is not a JSON object", cb.ID)
	}
	dst = strconv.AppendInt(append(dst, `{"callback_id":`...), cb.ID, 10)
	if msg[1] != '}' {
		dst = append(dst, ',')
	}
	return append(dst, msg[1:]...), nil
}

// taskEvent is the task callback of a task of job jobUUID that reached a
// final state: the one place a task's event is built.
func taskEvent(jobUUID string, t store.Task, state store.State, took time.Duration, result json.RawMessage, errText string) Event {
	return Event{Type: store.EventTask, JobID: jobUUID, Task: &TaskEvent{
		ID: t.UUID, Number: t.Seq, Kind: t.Kind, State: state, TimeSecs: took.Seconds(),
		Attempts: t.Attempts, MayHaveRunTwice: t.MayHaveRunTwice(), Result: result, Error: errText,
	}}
}

func jobEvent(job store.Job) Event {
	return Event{Type: store.EventJob, JobID: job.UUID, Job: &JobEvent{
		Name:        job.Name,
		Outcome:     job.State,
		ElapsedSecs: job.Elapsed.Seconds(),
		Total:       job.Total,
		Succeeded:   job.Succeeded,
		Failed:      job.Failed,
		Cancelled:   job.Cancelled,
	}}
}

// taskNumber reads task n (1-based) of the job jobID: what pcd logs JOB N
// and the API's /tasks/{n} name. A number outside the job is
// store.ErrNotFound.
func taskNumber(ctx context.Context, db store.Store, job store.Job, n int64) (store.TaskRow, error) {
	if n < 1 || n > job.Total {
		return store.TaskRow{}, fmt.Errorf("job %s has %d %s, so no task %d: %w", job.UUID, job.Total, pluralTasks(job.Total), n, store.ErrNotFound)
	}
	rows, err := db.TasksInState(ctx, job.ID, "", n-1, 1)
	if err != nil {
		return store.TaskRow{}, err
	}
	if len(rows) == 0 || rows[0].Seq != n {
		return store.TaskRow{}, fmt.Errorf("job %s: task %d: %w", job.UUID, n, store.ErrNotFound)
	}
	return rows[0], nil
}

// Cuts says which of an exec result's streams were cut to their last
// bytes, and how many were kept: for notes beside printed output.
func (r ExecResult) Cuts() []string {
	var out []string
	why := ""
	if r.SpoolError != "" {
		why = " (it could not be spooled: " + r.SpoolError + ")"
	}
	if r.StdoutTruncated && !r.StdoutSpooled {
		out = append(out, fmt.Sprintf("stdout was cut to its last %d bytes%s", len(r.Stdout), why))
	}
	if r.StderrTruncated && !r.StderrSpooled {
		out = append(out, fmt.Sprintf("stderr was cut to its last %d bytes%s", len(r.Stderr), why))
	}
	return out
}
