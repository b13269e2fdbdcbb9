package web

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/store"
)

type sse struct {
	id    int64
	event string
	data  map[string]any
}

// readEvents reads n events (all, if n < 0, until the stream ends).
func readEvents(t *testing.T, resp *http.Response, n int) []sse {
	t.Helper()
	var out []sse
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var cur sse
	for (n < 0 || len(out) < n) && sc.Scan() {
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

func stream(t *testing.T, url string, lastID int64) *http.Response {
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

	resp := stream(t, srv.URL+"/api/v1/events?follow=false&job="+id[:8], 0)
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
	resp = stream(t, srv.URL+"/api/v1/events?follow=false&job="+id, all[2].id)
	rest := readEvents(t, resp, -1)
	resp.Body.Close()
	if len(rest) != 4 || rest[0].id != all[3].id || rest[3].id != all[6].id {
		t.Fatalf("resumed after %d: %d events from %v; want the last 4", all[2].id, len(rest), rest)
	}

	// A following stream of every job: the old events, then a new job's.
	resp = stream(t, srv.URL+"/api/v1/events", all[6].id)
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
