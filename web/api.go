package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/store"
)

// Job is a job as pcd status --json and the API show it.
type Job struct {
	ID          string      `json:"job_id"`
	Name        string      `json:"name"`
	State       store.State `json:"state"`
	Sealed      bool        `json:"sealed"`
	Round       int         `json:"round"`
	Workers     int         `json:"workers"`
	QueueSize   int         `json:"queue_size"`
	Total       int64       `json:"total"`
	Done        int64       `json:"done"`
	Succeeded   int64       `json:"succeeded"`
	Failed      int64       `json:"failed"`
	Cancelled   int64       `json:"cancelled"`
	ElapsedSecs float64     `json:"elapsed_secs"`
	CreatedAt   time.Time   `json:"created_at"`
	StartedAt   *time.Time  `json:"started_at,omitempty"`
	FinishedAt  *time.Time  `json:"finished_at,omitempty"`
	Paused      bool        `json:"paused,omitempty"`
	Priority    int         `json:"priority,omitempty"`
	Group       string      `json:"group,omitempty"`
	StartAt     *time.Time  `json:"start_at,omitempty"`
	Halt        string      `json:"halt,omitempty"`
	Kinds       []string    `json:"kinds,omitempty"`
	// Waiting says why a pending job waits for another runner (a task
	// kind the runners that looked do not know).
	Waiting string `json:"waiting,omitempty"`
}

// ViewJob is j as the API shows it.
func ViewJob(j store.Job) Job {
	v := Job{ID: j.UUID, Name: j.Name, State: j.State, Sealed: j.Sealed, Round: j.Round, Workers: j.Workers,
		QueueSize: j.QueueSize, Total: j.Total, Done: j.Done(), Succeeded: j.Succeeded, Failed: j.Failed,
		Cancelled: j.Cancelled, ElapsedSecs: j.Elapsed.Seconds(), CreatedAt: j.CreatedAt}
	if !j.StartedAt.IsZero() {
		v.StartedAt = &j.StartedAt
	}
	if !j.FinishedAt.IsZero() {
		v.FinishedAt = &j.FinishedAt
	}
	if !j.StartAt.IsZero() {
		v.StartAt = &j.StartAt
	}
	v.Paused, v.Priority, v.Group, v.Halt = j.Paused && !j.Finished(), j.Priority, j.Group, j.Halt
	v.Kinds = j.Kinds
	if j.State == store.Pending {
		v.Waiting = j.Waiting
	}
	return v
}

// Task is a task as pcd tasks --json and the API show it.
type Task struct {
	Number   int64       `json:"number"`
	ID       string      `json:"task_id"`
	Kind     string      `json:"kind"`
	State    store.State `json:"state"`
	Attempts int         `json:"attempts"`
	// Interrupts counts runs cut short by a runner's death: not attempts.
	Interrupts int `json:"interrupts"`
	// MayHaveRunTwice: a runner that had started the task died before its
	// result committed.
	MayHaveRunTwice bool            `json:"may_have_run_twice"`
	TimeSecs        float64         `json:"time_secs"`
	Payload         json.RawMessage `json:"payload"`
	Result          json.RawMessage `json:"result,omitempty"`
	Error           string          `json:"error,omitempty"`
}

// ViewTask is t as the API shows it.
func ViewTask(t store.TaskRow) Task {
	return Task{Number: t.Seq, ID: t.UUID, Kind: t.Kind, State: t.State, Attempts: t.Attempts,
		Interrupts: t.Interrupts, MayHaveRunTwice: t.MayHaveRunTwice(), TimeSecs: t.Time.Seconds(), Payload: t.Payload, Result: t.Result, Error: t.Error}
}

func (s *server) findJob(w http.ResponseWriter, r *http.Request) (store.Job, bool) {
	j, err := s.c.Job(r.Context(), r.PathValue("job"))
	if err != nil {
		s.failErr(w, r, err)
		return store.Job{}, false
	}
	return j, true
}

// jobs lists recent jobs, newest first: ?state=S&limit=N (default 20).
// jobs is a page of jobs, newest first: ?state=S&name=TEXT&before=N&limit=N
// (default 20, at most 10,000); next_before continues it.
func (s *server) jobs(w http.ResponseWriter, r *http.Request) {
	state, err := stateParam(r)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	limit, err := intParam(r, "limit", 20, 1, 10_000)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	before, err := intParam(r, "before", 0, 0, math.MaxInt64)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	name := r.URL.Query().Get("name")
	if len(name) > 1000 {
		s.failErr(w, r, badRequest("name may hold at most 1000 bytes"))
		return
	}
	jobs, err := s.c.Jobs(r.Context(), store.JobFilter{State: state, Name: name, Before: before, Limit: int(limit) + 1})
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	page := map[string]any{}
	if len(jobs) > int(limit) {
		jobs = jobs[:limit]
		page["next_before"] = jobs[len(jobs)-1].ID
	}
	out := make([]Job, len(jobs))
	for i, j := range jobs {
		out[i] = ViewJob(j)
	}
	page["jobs"] = out
	writeJSON(w, http.StatusOK, page)
}

// throughput is the tasks finished per store.ThroughputSpan over the last
// ?minutes=N (default 60, at most a week), oldest first, every span
// there: those with none count 0.
func (s *server) throughput(w http.ResponseWriter, r *http.Request) {
	minutes, err := intParam(r, "minutes", 60, 1, int64(store.ThroughputKept/time.Minute))
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	now := time.Now()
	from := now.Add(-time.Duration(minutes) * time.Minute).Truncate(store.ThroughputSpan).Add(store.ThroughputSpan)
	spans, err := s.c.Throughput(r.Context(), from)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	type point struct {
		At        time.Time `json:"at"`
		Succeeded int64     `json:"succeeded"`
		Failed    int64     `json:"failed"`
	}
	var out []point
	for at, i := from, 0; !at.After(now); at = at.Add(store.ThroughputSpan) {
		p := point{At: at.UTC()}
		for ; i < len(spans) && !spans[i].At.After(at); i++ {
			if spans[i].At.Equal(at) {
				p.Succeeded, p.Failed = spans[i].Succeeded, spans[i].Failed
			}
		}
		out = append(out, p)
	}
	writeJSON(w, http.StatusOK, map[string]any{"span_secs": store.ThroughputSpan.Seconds(), "spans": out})
}

func (s *server) job(w http.ResponseWriter, r *http.Request) {
	if j, ok := s.findJob(w, r); ok {
		writeJSON(w, http.StatusOK, ViewJob(j))
	}
}

// tasks is a page of a job's tasks: ?state=S&after=N&limit=N (default
// 100, at most 1000); next_after continues it.
func (s *server) tasks(w http.ResponseWriter, r *http.Request) {
	j, ok := s.findJob(w, r)
	if !ok {
		return
	}
	state, err := stateParam(r)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	after, err := intParam(r, "after", 0, 0, 1<<62)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	limit, err := intParam(r, "limit", 100, 1, 1000)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	rows, err := s.c.Tasks(r.Context(), j.UUID, engine.TaskFilter{State: state, After: after, Limit: int(limit)})
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	out := make([]Task, len(rows))
	for i, t := range rows {
		out[i] = ViewTask(t)
	}
	resp := map[string]any{"job_id": j.UUID, "tasks": out}
	if len(rows) == int(limit) {
		resp["next_after"] = rows[len(rows)-1].Seq
	}
	writeJSON(w, http.StatusOK, resp)
}

// task is one task with its output: an exec task's stdout and stderr
// come as they are in its result.
func (s *server) task(w http.ResponseWriter, r *http.Request) {
	j, ok := s.findJob(w, r)
	if !ok {
		return
	}
	n, err := strconv.ParseInt(r.PathValue("n"), 10, 64)
	if err != nil {
		s.failErr(w, r, fmt.Errorf("job %s: no task %q: %w", j.UUID, r.PathValue("n"), store.ErrNotFound))
		return
	}
	t, err := s.c.TaskNumber(r.Context(), j.UUID, n)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ViewTask(t))
}

// callbacks are a job's callbacks, each with its deliveries.
func (s *server) callbacks(w http.ResponseWriter, r *http.Request) {
	j, ok := s.findJob(w, r)
	if !ok {
		return
	}
	deliveries, err := s.c.Deliveries(r.Context(), j)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	type delivery struct {
		CallbackID int64      `json:"callback_id"`
		Sink       string     `json:"sink"`
		State      string     `json:"state"`
		Attempts   int        `json:"attempts"`
		Error      string     `json:"error,omitempty"`
		At         *time.Time `json:"delivered_at,omitempty"`
	}
	out := []delivery{}
	for _, d := range deliveries {
		v := delivery{CallbackID: d.ID, Sink: d.Sink, State: string(d.State), Attempts: d.Attempts, Error: d.LastError}
		if !d.DeliveredAt.IsZero() {
			v.At = &d.DeliveredAt
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, map[string]any{"job_id": j.UUID, "deliveries": out})
}

// submit creates a job from a job file in the body (application/json),
// as pcd submit FILE does, or from NDJSON tasks streamed in the body
// (application/x-ndjson), as pcd submit - does; 201 with the job.
func (s *server) submit(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); strings.HasPrefix(ct, "application/x-ndjson") || strings.HasPrefix(ct, "application/ndjson") {
		s.submitStream(w, r)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		s.fail(w, r, apiError{http.StatusRequestEntityTooLarge, "too_large", 2,
			fmt.Sprintf("a job file in a request is at most %d MiB; stream a big job as NDJSON with pcd submit -", maxBody>>20)})
		return
	}
	if err != nil {
		s.failErr(w, r, badRequest("read the body: %v", err))
		return
	}
	jf, err := engine.ParseJobFile(body, s.c.Registry())
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	jf.Key = r.Header.Get("Idempotency-Key")
	job, err := s.c.Submit(r.Context(), jf)
	if errors.Is(err, store.ErrDuplicate) {
		writeJSON(w, http.StatusOK, ViewJob(job))
		return
	}
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, ViewJob(job))
}

// submitStream creates a job from NDJSON tasks in the body, one
// {"kind": ..., "payload": ...} a line, committed in batches as they are
// read: the daemon starts on the first while the rest still come. The
// job's settings are query parameters: name, workers, queue_size. A bad
// line ends the stream with its line number; a job that holds earlier
// batches is sealed with them, and the error says so.
func (s *server) submitStream(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	workers, err := intParam(r, "workers", int64(engine.DefaultWorkers), 1, 10_000)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	queue, err := intParam(r, "queue_size", int64(engine.DefaultQueueSize), 1, 1_000_000)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	jf := engine.JobFile{Name: q.Get("name"), Workers: int(workers), QueueSize: int(queue), Key: r.Header.Get("Idempotency-Key")}
	job, err := s.c.SubmitStream(r.Context(), r.Body, engine.StreamOptions{Job: jf})
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, ViewJob(job))
}

// action changes a job as the command of the same name does.
func (s *server) action(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		j, ok := s.findJob(w, r)
		if !ok {
			return
		}
		ctx := r.Context()
		var err error
		switch name {
		case "cancel":
			// It answers once the job's runner has stopped its tasks, within
			// a minute; after that the job is cancelled all the same, and
			// its runner stops them when it next looks.
			wait, cancel := context.WithTimeout(ctx, time.Minute)
			j, err = s.c.Cancel(wait, j.UUID)
			cancel()
			if errors.Is(err, engine.ErrStopPending) && ctx.Err() == nil {
				s.o.Logger.Info("job cancelled; its runner has not stopped its tasks yet", "job", j.UUID)
				err = nil
			}
		case "retry":
			j, err = s.c.Retry(ctx, j.UUID)
		case "pause", "resume":
			change := s.c.Pause
			if name == "resume" {
				change = s.c.Resume
			}
			if _, err = change(ctx, j.UUID); err == nil {
				j, err = s.c.Job(ctx, j.UUID)
			}
		}
		if err != nil {
			s.failErr(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, ViewJob(j))
	}
}

// Runner is a runner as pcd status --json and the API show it.
type Runner struct {
	Role      string     `json:"role"`
	Host      string     `json:"host"`
	PID       int        `json:"pid"`
	Alive     bool       `json:"alive"`
	Version   string     `json:"version,omitempty"`
	Started   *time.Time `json:"started,omitempty"`
	Heartbeat *time.Time `json:"heartbeat,omitempty"`
	Running   int        `json:"running_tasks"`
}

// ViewRunners are runners as the API shows them, and the tasks the live
// ones run.
func ViewRunners(runners []store.RunnerInfo) (views []Runner, running int) {
	views = []Runner{}
	for i, x := range runners {
		v := Runner{Role: x.Role, Host: x.Host, PID: x.PID, Alive: x.Alive, Version: x.Version, Running: x.Running}
		if !x.StartedAt.IsZero() {
			v.Started = &runners[i].StartedAt
		}
		if !x.Heartbeat.IsZero() {
			v.Heartbeat = &runners[i].Heartbeat
		}
		if x.Alive {
			running += x.Running
		}
		views = append(views, v)
	}
	return views, running
}

// status is the overview of pcd status.
func (s *server) status(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	runners, err := s.c.Runners(ctx)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	counts, err := s.c.Counts(ctx)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	pending, err := s.c.SinkBacklog(ctx)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	rs, running := ViewRunners(runners)
	jobs := map[store.State]int64{}
	for state, t := range counts {
		jobs[state] = t.Jobs
	}
	last, err := s.c.LastCallbackID(ctx)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"runners": rs, "jobs": jobs, "running_tasks": running,
		"pending_callbacks": pending, "database_bytes": s.c.Size(), "version": s.o.Version, "last_callback_id": last})
}
