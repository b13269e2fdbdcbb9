package web

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/internal/pgtest"
	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/store/postgres"
)

type sse struct {
	id    int64
	event string
	data  map[string]any
}

// readEvents reads n events (all, if n < 0, until the stream ends).
func readEvents(t *testing.T, resp *http.Response, n int) []sse {
	t.Helper()
	return scanEvents(t, resp, func(out []sse) bool { return n >= 0 && len(out) >= n })
}

// readEventsUntilJob reads events up to the first job event.
func readEventsUntilJob(t *testing.T, resp *http.Response) []sse {
	t.Helper()
	out := scanEvents(t, resp, func(out []sse) bool { return len(out) > 0 && out[len(out)-1].event == "job" })
	if len(out) == 0 || out[len(out)-1].event != "job" {
		t.Fatalf("the stream ended before a job event: %+v", out)
	}
	return out
}

// scanEvents reads events until enough says so, or the stream ends.
func scanEvents(t *testing.T, resp *http.Response, enough func([]sse) bool) []sse {
	t.Helper()
	var out []sse
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var cur sse
	for !enough(out) && sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			cur.id, _ = strconv.ParseInt(line[4:], 10, 64)
		case strings.HasPrefix(line, "event: "):
			cur.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(line[6:]), &cur.data); err != nil {
				t.Fatalf("data is not JSON: %q", line)
			}
		case line == "" && cur.id != 0:
			out = append(out, cur)
			cur = sse{}
		}
	}
	return out
}

func openStream(t *testing.T, url string, lastID int64) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if lastID > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatInt(lastID, 10))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return resp
}

func runJob(t *testing.T, db store.Store, id string) {
	t.Helper()
	runner, err := engine.OpenRunner(context.Background(), db, engine.RunnerConfig{Role: engine.RoleRun})
	if err != nil {
		t.Fatal(err)
	}
	defer runner.Close()
	job, err := db.FindJob(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := runner.RunJob(context.Background(), job.ID); err != nil {
		t.Fatal(err)
	}
}

// TestEventStream: committed callbacks as Server-Sent Events, each with
// its callback_id as id; a client resuming with Last-Event-ID gets the
// rest, none lost or repeated; a following stream sees new jobs live.
func TestEventStream(t *testing.T) {
	srv, db := newServer(t, "")
	r := call(t, srv, "POST", "/api/v1/jobs", `{"tasks": [{"kind": "noop"}, {"kind": "noop"}, {"kind": "noop"}, {"kind": "noop"}, {"kind": "noop"}, {"kind": "noop"}]}`)
	id := r.body["job_id"].(string)
	runJob(t, db, id)

	resp := openStream(t, srv.URL+"/api/v1/events?follow=false&job="+id[:8], 0)
	all := readEvents(t, resp, -1)
	resp.Body.Close()
	if len(all) != 7 || all[6].event != "job" || all[6].data["outcome"] != "succeeded" {
		t.Fatalf("events of a 6-task job: %d, last %+v", len(all), all[len(all)-1])
	}
	for i, ev := range all {
		if ev.data["callback_id"] != float64(ev.id) || (i > 0 && ev.id <= all[i-1].id) {
			t.Fatalf("event %d: id %d, callback_id %v", i, ev.id, ev.data["callback_id"])
		}
	}
	// Resume after the third event.
	resp = openStream(t, srv.URL+"/api/v1/events?follow=false&job="+id, all[2].id)
	rest := readEvents(t, resp, -1)
	resp.Body.Close()
	if len(rest) != 4 || rest[0].id != all[3].id || rest[3].id != all[6].id {
		t.Fatalf("resumed after %d: %d events from %v; want the last 4", all[2].id, len(rest), rest)
	}

	// A following stream of every job: the old events, then a new job's.
	resp = openStream(t, srv.URL+"/api/v1/events", all[6].id)
	defer resp.Body.Close()
	got := make(chan []sse, 1)
	go func() { got <- readEvents(t, resp, 2) }()
	r = call(t, srv, "POST", "/api/v1/jobs", `{"tasks": [{"kind": "noop"}]}`)
	runJob(t, db, r.body["job_id"].(string))
	select {
	case evs := <-got:
		if len(evs) != 2 || evs[0].data["job_id"] != r.body["job_id"] || evs[1].event != "job" || evs[0].id <= all[6].id {
			t.Errorf("the new job's events: %+v", evs)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no event of the new job in 30 s")
	}
	if r := call(t, srv, "GET", "/api/v1/events?after=x", ""); r.status != 400 {
		t.Errorf("after=x: %d", r.status)
	}
}

// TestManyStreamsShareOneWatch: more event streams than the database has
// read connections. Each stream used to hold one for its life, so a few
// streams stopped the API and the runner. Now the API answers, a job
// runs, and every stream gets every event of it, once, in order.
func TestManyStreamsShareOneWatch(t *testing.T) {
	srv, db := newServer(t, "")
	const streams = 40
	resps := make([]*http.Response, streams)
	for i := range resps {
		resps[i] = openStream(t, srv.URL+"/api/v1/events?after=0", 0)
		defer resps[i].Body.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/api/v1/status", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("status with %d streams open: %v", streams, err)
	}
	resp.Body.Close()
	r := call(t, srv, "POST", "/api/v1/jobs", `{"tasks": [{"kind": "noop"}, {"kind": "noop"}, {"kind": "noop"}]}`)
	runJob(t, db, r.body["job_id"].(string))
	for i, resp := range resps {
		evs := readEvents(t, resp, 4)
		if len(evs) != 4 || evs[3].event != "job" || evs[3].data["job_id"] != r.body["job_id"] {
			t.Fatalf("stream %d: %+v", i, evs)
		}
		for j := 1; j < len(evs); j++ {
			if evs[j].id <= evs[j-1].id {
				t.Fatalf("stream %d: ids out of order: %+v", i, evs)
			}
		}
	}
}

// TestStreamBackfillsWhatTheRingDropped: a ring of 5 events, a stream
// that resumes from far back, and one filtered to a job: each reads from
// the database what the ring no longer holds, then goes on from the ring,
// with every event once and in order.
func TestStreamBackfillsWhatTheRingDropped(t *testing.T) {
	_, db := newServer(t, "")
	s := &server{c: clientOf(db), hub: newHub(clientOf(db), slog.New(slog.DiscardHandler))}
	s.hub.maxEvents = 5
	srv := httptest.NewServer(http.HandlerFunc(s.events))
	defer srv.Close()
	api := httptest.NewServer(Handler(clientOf(db), Options{}))
	defer api.Close()

	submit := func(n int) string {
		body := `{"tasks": [` + strings.Repeat(`{"kind": "noop"},`, n-1) + `{"kind": "noop"}]}`
		r := call(t, api, "POST", "/api/v1/jobs", body)
		return r.body["job_id"].(string)
	}
	first := submit(30)
	runJob(t, db, first)
	// A stream keeps the hub's ring going while the others come and go.
	live := openStream(t, srv.URL, 0)
	defer live.Body.Close()
	liveGot := make(chan []sse, 1)
	go func() { liveGot <- readEvents(t, live, 31+21) }()
	second := submit(20)
	runJob(t, db, second)

	all := openStream(t, srv.URL+"?follow=false", 0)
	evs := readEvents(t, all, -1)
	all.Body.Close()
	if len(evs) != 31+21 {
		t.Fatalf("from the start: %d events, want %d", len(evs), 31+21)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].id != evs[i-1].id+1 {
			t.Fatalf("event %d: id %d after %d", i, evs[i].id, evs[i-1].id)
		}
	}
	one := openStream(t, srv.URL+"?follow=false&job="+second, 3)
	evs2 := readEvents(t, one, -1)
	one.Body.Close()
	if len(evs2) != 21 || evs2[20].event != "job" || evs2[0].data["job_id"] != second {
		t.Fatalf("the second job's stream: %d events, %+v", len(evs2), evs2)
	}
	select {
	case got := <-liveGot:
		if len(got) != 52 || got[0].id != evs[0].id || got[51].id != evs[51].id {
			t.Fatalf("the live stream: %d events", len(got))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the live stream did not get every event in 30 s")
	}
}

// TestStreamFilters: ?event=job sends job events alone; ?sample=true
// sends every job event and every task that did not succeed, and of a
// job's successes one per quarter second, live or read back.
func TestStreamFilters(t *testing.T) {
	srv, db := newServer(t, "")
	live := openStream(t, srv.URL+"/api/v1/events?sample=true", 0)
	defer live.Body.Close()
	body := `{"tasks": [` + strings.Repeat(`{"kind": "noop"},`, 60) + `{"kind": "fail", "payload": {"error": "x"}}, {"kind": "fail", "payload": {"error": "y"}}]}`
	r := call(t, srv, "POST", "/api/v1/jobs", body)
	id := r.body["job_id"].(string)
	runJob(t, db, id)
	check := func(name string, evs []sse, maxOK int) {
		t.Helper()
		var ok, failed, jobs int
		for _, ev := range evs {
			switch {
			case ev.event == "job":
				jobs++
			case ev.data["state"] == "failed":
				failed++
			case ev.data["state"] == "succeeded":
				ok++
			}
		}
		if jobs != 1 || failed != 2 || ok < 1 || ok > maxOK {
			t.Errorf("%s: %d job events, %d failed, %d succeeded tasks; want 1, 2, and 1 to %d", name, jobs, failed, ok, maxOK)
		}
	}
	// The job runs in milliseconds: a few quarter seconds at most, even
	// on a loaded machine, against the 60 successes unsampled.
	check("live", readEventsUntilJob(t, live), 20)
	// With the live stream gone, the hub stops; the next stream starts it
	// at the newest id, so the job is read back from the database, where
	// a page keeps one success per job. (Were the live stream open, the
	// ring would hold the job, sampled by time.)
	live.Body.Close()
	hub := srv.Config.Handler.(*handler).s.hub
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		hub.mu.Lock()
		n := hub.streams
		hub.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the live stream did not end")
		}
	}
	back := openStream(t, srv.URL+"/api/v1/events?sample=true&follow=false", 0)
	check("read back", readEvents(t, back, -1), 1)
	back.Body.Close()
	jobs := openStream(t, srv.URL+"/api/v1/events?event=job&follow=false", 0)
	evs := readEvents(t, jobs, -1)
	jobs.Body.Close()
	if len(evs) != 1 || evs[0].event != "job" {
		t.Errorf("event=job: %+v", evs)
	}
	if r := call(t, srv, "GET", "/api/v1/events?event=tasks", ""); r.status != 400 {
		t.Errorf("event=tasks: %d, want 400", r.status)
	}
}

// TestTaskStateReadsTheField: the state read without decoding is the
// task's own, whatever its result or error say.
func TestTaskStateReadsTheField(t *testing.T) {
	for _, want := range []store.State{store.Succeeded, store.Failed, store.Cancelled} {
		ev := engine.Event{Type: store.EventTask, JobID: "j", Task: &engine.TaskEvent{ID: "t", Number: 1, Kind: `k","state":"x`,
			State: want, Result: json.RawMessage(`{"state":"succeeded",",\"state\":\"y":1}`), Error: `,"state":"failed"`}}
		msg, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if got := taskState(store.Callback{Event: store.EventTask, Message: msg}); got != want {
			t.Errorf("taskState of %s = %q, want %q", msg, got, want)
		}
	}
}

// TestFeedAndDatabaseMeet: a runner in the server's process offers its
// callbacks (Feed), while other writers' come only through the database:
// a cancel through the API, and a second runner (on PostgreSQL at the
// same time as the first, as another daemon's). A stream gets every
// callback once, in id order, and the fed runner's were not read back.
func TestFeedAndDatabaseMeet(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		_, db := newServer(t, "")
		feedAndDatabaseMeet(t, db, db)
	})
	t.Run("postgres", func(t *testing.T) {
		url := pgtest.URL(t)
		open := func() store.Store {
			db, err := postgres.Open(context.Background(), url, postgres.Options{})
			if err != nil {
				pgtest.Unavailable(t, err)
			}
			t.Cleanup(func() { db.Close() })
			return db
		}
		feedAndDatabaseMeet(t, open(), open())
	})
}

// feedAndDatabaseMeet runs the test on db; a second handle of the same
// database, otherDB, runs the other runner (on SQLite, db itself, after
// the first runner: one runs at a time).
func feedAndDatabaseMeet(t *testing.T, db, otherDB store.Store) {
	together := otherDB != db
	feed := new(Feed)
	srv := httptest.NewServer(Handler(clientOf(db), Options{Feed: feed}))
	defer srv.Close()
	resp := openStream(t, srv.URL+"/api/v1/events?after=0", 0)
	defer resp.Body.Close()
	submit := func(n int) string {
		r := call(t, srv, "POST", "/api/v1/jobs", `{"tasks": [`+strings.Repeat(`{"kind": "noop"},`, n-1)+`{"kind": "noop"}]}`)
		return r.body["job_id"].(string)
	}
	fed, cancelled, other := submit(300), submit(50), submit(300)
	before := readBack.Load()
	run := func(db store.Store, id string, cfg engine.Config) {
		t.Helper()
		runner, err := engine.OpenRunner(context.Background(), db, engine.RunnerConfig{Role: engine.RoleRun, Config: cfg})
		if err != nil {
			t.Error(err)
			return
		}
		defer runner.Close()
		job, err := db.FindJob(context.Background(), id)
		if err == nil {
			_, err = runner.RunJob(context.Background(), job.ID)
		}
		if err != nil {
			t.Error(err)
		}
	}
	if r := call(t, srv, "POST", "/api/v1/jobs/"+cancelled+"/cancel", ""); r.status != 200 {
		t.Fatalf("cancel: %d %s", r.status, r.raw)
	}
	if together {
		done := make(chan struct{})
		go func() {
			defer close(done)
			run(otherDB, other, engine.Config{})
		}()
		run(db, fed, engine.Config{OnCallbacks: feed.Offer})
		<-done
	} else {
		run(db, fed, engine.Config{OnCallbacks: feed.Offer})
		run(otherDB, other, engine.Config{})
	}
	want, err := db.CallbacksAfter(context.Background(), 0, nil, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != 301+51+301 {
		t.Fatalf("%d callbacks in the database, want %d", len(want), 301+51+301)
	}
	got := readEvents(t, resp, len(want))
	for i := range want {
		if i >= len(got) || got[i].id != want[i].ID {
			t.Fatalf("event %d of %d: %+v, want callback %d", i, len(got), got[min(i, len(got)-1)], want[i].ID)
		}
	}
	// The others' 352 are read back; of the fed runner's 301, a few may
	// be, when a look at the database comes between a commit and its
	// offer.
	n := readBack.Load() - before
	t.Logf("%d callbacks read back from the database", n)
	if n < 352 || n > 352+150 {
		t.Errorf("%d callbacks read back from the database, want the others' 352 and few of the fed runner's", n)
	}
}

// TestStreamsAreBoundedAndEndOnShutdown: past the bound, a stream is
// refused with 503 and Retry-After; a server's Shutdown ends its streams
// at once (a stream is never idle, and Shutdown waits for idle
// connections).
func TestStreamsAreBoundedAndEndOnShutdown(t *testing.T) {
	_, db := newServer(t, "")
	var logged strings.Builder
	var logMu sync.Mutex
	h := Handler(clientOf(db), Options{Logger: slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logged.Write(p)
	}), nil))})
	h.(*handler).s.hub.maxStreams = 2
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := Server(ln.Addr().String(), h, slog.New(slog.DiscardHandler))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	url := "http://" + ln.Addr().String() + "/api/v1/events"
	a, b := openStream(t, url, 0), openStream(t, url, 0)
	defer a.Body.Close()
	defer b.Body.Close()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), `"exit_code": 75`) {
		t.Errorf("a third stream: %d, Retry-After %q, %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	logMu.Lock()
	if log := logged.String(); strings.Contains(log, "level=ERROR") || !strings.Contains(log, "level=WARN") {
		t.Errorf("a client over the stream cap is not a server error; logged:\n%s", log)
	}
	logMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown with two streams open: %v after %v", err, time.Since(start))
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("shutdown took %v", took)
	}
	for _, r := range []*http.Response{a, b} {
		if _, err := io.ReadAll(r.Body); err != nil {
			t.Errorf("a stream did not end cleanly: %v", err)
		}
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("serve: %v", err)
	}
}

// TestStreamLetsAStalledClientGo: a client that stops reading, while
// events flow, is let go once a write waits writeWait: its stream ends,
// and its slot is free.
func TestStreamLetsAStalledClientGo(t *testing.T) {
	defer func(w time.Duration) { writeWait = w }(writeWait)
	writeWait = 300 * time.Millisecond
	srv, db := newServer(t, "")
	s := srv.Config.Handler.(*handler).s
	// A client with a small receive buffer, which sends its request and
	// reads nothing.
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /api/v1/events HTTP/1.1\r\nHost: localhost\r\n\r\n")
	streams := func() int {
		s.hub.mu.Lock()
		defer s.hub.mu.Unlock()
		return s.hub.streams
	}
	for deadline := time.Now().Add(10 * time.Second); streams() != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the stream did not start")
		}
	}
	// About 8 MB of events: more than the socket buffers hold.
	r := call(t, srv, "POST", "/api/v1/jobs", `{"tasks": [`+strings.Repeat(`{"kind": "noop"},`, 39_999)+`{"kind": "noop"}]}`)
	runJob(t, db, r.body["job_id"].(string))
	for deadline := time.Now().Add(30 * time.Second); streams() != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the stalled client's stream still runs 30 s after the job")
		}
	}
}

// writerFunc is an io.Writer made of a function.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
