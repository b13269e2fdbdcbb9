package web

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/store"
)

// keepAlive is how often an idle event stream gets a comment, so that
// proxies and clients see it alive.
const keepAlive = 15 * time.Second

// writeWait is how long a stream waits for a client to take what it
// writes before it lets the client go.
var writeWait = time.Minute

// streamPage is how many events a stream takes at a time, from the ring
// or the database.
const streamPage = 1000

// events streams committed callbacks as Server-Sent Events: pcd watch
// over HTTP. Each event's id is its callback_id, its type "task" or
// "job", its data the callback's JSON. A client that reconnects with
// Last-Event-ID (or ?after=ID) goes on after that event, with none lost
// or repeated; with neither, the stream starts at the first callback.
// ?job=ID,ID follows those jobs; with none, every job. ?event=job (or
// task) sends only those events. ?sample=true thins each job's successful
// tasks to one per sampleEvery, for a display (a dashboard): job events
// and tasks that did not succeed all come. ?follow=false ends the stream
// once the jobs are complete. Every stream reads from the
// server's one hub (see hub).
func (s *server) events(w http.ResponseWriter, r *http.Request) {
	after, err := lastEventID(r)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	var jobs []store.Job
	var only map[int64]bool
	if refs := r.URL.Query().Get("job"); refs != "" {
		only = map[int64]bool{}
		for _, ref := range strings.Split(refs, ",") {
			j, err := s.c.Job(r.Context(), strings.TrimSpace(ref))
			if err != nil {
				s.failErr(w, r, err)
				return
			}
			jobs = append(jobs, j)
			only[j.ID] = true
		}
	}
	follow := r.URL.Query().Get("follow") != "false"
	event := r.URL.Query().Get("event")
	if event != "" && event != store.EventTask && event != store.EventJob {
		s.failErr(w, r, badRequest("event must be task or job, got %q", event))
		return
	}
	sample := r.URL.Query().Get("sample") == "true"
	// The thin ring holds every job event and the sampled task events.
	thin := sample || event == store.EventJob
	if err := s.hub.join(r.Context(), thin); err != nil {
		if errors.Is(err, errTooManyStreams) {
			w.Header().Set("Retry-After", "5")
			s.fail(w, r, apiError{http.StatusServiceUnavailable, "try_again", 75, err.Error()})
			return
		}
		s.failErr(w, r, err)
		return
	}
	defer s.hub.leave(thin)
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	out := bufio.NewWriterSize(w, 32<<10)
	st := &stream{s: s, out: out, cursor: after, jobs: jobs, only: only, follow: follow, event: event, sample: sample, thin: thin,
		flush: func() error {
			if err := out.Flush(); err != nil {
				return err
			}
			if err := rc.Flush(); err != nil {
				return err
			}
			// A client that stops reading is let go: the writes until
			// the next flush (at most keepAlive away) must be taken
			// within writeWait.
			_ = rc.SetWriteDeadline(time.Now().Add(writeWait))
			return nil
		}}
	// The server's Shutdown ends the stream (Server).
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-s.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	err = st.run(ctx)
	if err != nil && !errors.Is(err, context.Canceled) && r.Context().Err() == nil {
		fmt.Fprintf(out, "event: error\ndata: %q\n\n", err.Error())
		_ = st.flush()
	}
}

// stream is one client's event stream: where it is, and what it follows.
type stream struct {
	s      *server
	out    *bufio.Writer
	flush  func() error
	cursor int64          // the last callback id passed
	jobs   []store.Job    // the jobs followed; none: every job
	only   map[int64]bool // the same, as a set
	follow bool
	event  string // "task" or "job": only those; "": both
	// sample thins a job's successful tasks to one per sampleEvery.
	sample bool
	thin   bool // the stream reads the hub's thin ring
	// trouble is the database trouble last told to the client.
	trouble string
	buf     []byte
}

func (st *stream) run(ctx context.Context) error {
	if err := st.flush(); err != nil {
		return err
	}
	keep := time.NewTicker(keepAlive)
	defer keep.Stop()
	// end, once the followed jobs are complete (without follow), is the
	// newest callback then: the stream ends once it has passed it.
	end := int64(-1)
	for {
		if !st.follow && end < 0 {
			done, last, err := st.complete(ctx)
			if err != nil {
				if err := st.wait(ctx, err); err != nil {
					return err
				}
				continue
			}
			if done {
				end = last
			}
		}
		v := st.s.hub.read(st.cursor, st.thin, streamPage)
		if v.err != nil {
			return v.err
		}
		if v.trouble != st.trouble {
			st.trouble = v.trouble
			if v.trouble != "" {
				fmt.Fprintf(st.out, ": the database cannot be read (%s); waiting\n\n", v.trouble)
			}
		}
		if v.gap > st.cursor {
			if err := st.backfill(ctx, v.gap); err != nil {
				if err := st.wait(ctx, err); err != nil {
					return err
				}
			}
			continue
		}
		sent := false
		for _, f := range v.frames {
			if st.wants(f) {
				if _, err := st.out.Write(f.data); err != nil {
					return err
				}
				sent = true
			}
			st.cursor = f.id
		}
		if len(v.frames) < streamPage {
			// The ring holds every frame of its kind up to v.last, and
			// the stream has them all.
			st.cursor = max(st.cursor, v.last)
		}
		if sent || st.out.Buffered() > 0 {
			if err := st.flush(); err != nil {
				return err
			}
		}
		if len(v.frames) > 0 {
			continue
		}
		if end >= 0 && st.cursor >= end {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-v.changed:
		case <-keep.C:
			if _, err := st.out.WriteString(": keep-alive\n\n"); err != nil {
				return err
			}
		}
	}
}

// backfill sends, from the database, the events after the cursor up to
// gap that the ring no longer holds: a page at a time, holding no
// connection between pages.
func (st *stream) backfill(ctx context.Context, gap int64) error {
	cbs, err := st.s.c.Callbacks(ctx, st.cursor, st.jobs, streamPage)
	if err != nil {
		return err
	}
	succeeded := map[int64]bool{} // the jobs with a success sampled on this page
	for _, cb := range cbs {
		if cb.ID > gap {
			break // the ring has it
		}
		f := frame{id: cb.ID, job: cb.JobID, event: cb.Event, sampled: true}
		if st.sample && taskState(cb) == store.Succeeded {
			f.sampled = !succeeded[cb.JobID]
			succeeded[cb.JobID] = true
		}
		if st.wants(f) {
			if st.buf, err = engine.CallbackJSON(st.buf[:0], cb); err != nil {
				return err
			}
			if _, err := st.out.Write(encodeFrame(cb, st.buf)); err != nil {
				return err
			}
		}
		st.cursor = cb.ID
	}
	if len(cbs) < streamPage || cbs[len(cbs)-1].ID >= gap {
		st.cursor = gap // every followed event up to gap is out
	}
	return st.flush()
}

// wants says whether the stream sends f.
func (st *stream) wants(f frame) bool {
	return (st.only == nil || st.only[f.job]) && (st.event == "" || f.event == st.event) && (!st.sample || f.sampled)
}

// complete says whether the followed jobs (every job, if none) are
// complete, and the newest callback id, read after them: a job seen
// complete has its last callback at or before it.
func (st *stream) complete(ctx context.Context) (bool, int64, error) {
	if len(st.jobs) == 0 {
		n, _, err := st.s.c.Unfinished(ctx)
		if err != nil || n > 0 {
			return false, 0, err
		}
	}
	for _, job := range st.jobs {
		j, err := st.s.c.Job(ctx, job.UUID)
		if err != nil || !j.Finished() {
			return false, 0, err
		}
	}
	last, err := st.s.c.LastCallbackID(ctx)
	return err == nil, last, err
}

// wait waits a second after a database error that may pass, telling the
// client once; other errors end the stream.
func (st *stream) wait(ctx context.Context, err error) error {
	if !store.Temporary(err) {
		return err
	}
	if st.trouble == "" {
		st.trouble = strings.ReplaceAll(err.Error(), "\n", " ")
		fmt.Fprintf(st.out, ": the database cannot be read (%s); waiting\n\n", st.trouble)
		if err := st.flush(); err != nil {
			return err
		}
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Second):
		return nil
	}
}

// lastEventID is where a stream resumes: Last-Event-ID, or ?after.
func lastEventID(r *http.Request) (int64, error) {
	v := r.Header.Get("Last-Event-ID")
	if v == "" {
		v = r.URL.Query().Get("after")
	}
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, badRequest("Last-Event-ID (or after) must be a callback id, got %q", v)
	}
	return n, nil
}
