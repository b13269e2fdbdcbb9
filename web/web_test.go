package web

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/store/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newServer(t *testing.T, token string) (*httptest.Server, store.Store) {
	t.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "pcd.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(clientOf(db), Options{Token: token, Version: "test"}))
	t.Cleanup(func() {
		srv.Close()
		db.Close()
	})
	return srv, db
}

type reply struct {
	status int
	body   map[string]any
	raw    string
}

func call(t *testing.T, srv *httptest.Server, method, path, body string, header ...string) reply {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Host" {
			req.Host = header[i+1] // the client sends req.Host, not a Host header
			continue
		}
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, raw: string(raw)}
	_ = json.Unmarshal(raw, &r.body)
	return r
}

const jobFile = `{"name": "web", "tasks": [{"kind": "noop"}, {"kind": "fail", "payload": {"error": "no"}}, {"kind": "noop"}]}`

// TestAPI drives every endpoint against a real database: a job submitted
// through the API, read back, run by a runner, and changed.
func TestAPI(t *testing.T) {
	srv, db := newServer(t, "")
	if r := call(t, srv, "GET", "/healthz", ""); r.status != 200 || r.raw != "ok\n" {
		t.Fatalf("healthz: %d %q", r.status, r.raw)
	}
	if r := call(t, srv, "GET", "/readyz", ""); r.status != 200 {
		t.Fatalf("readyz: %d %q", r.status, r.raw)
	}
	r := call(t, srv, "POST", "/api/v1/jobs", jobFile, "Idempotency-Key", "k1")
	if r.status != 201 || r.body["total"] != 3.0 || r.body["state"] != "pending" {
		t.Fatalf("submit: %d %s", r.status, r.raw)
	}
	id := r.body["job_id"].(string)
	if again := call(t, srv, "POST", "/api/v1/jobs", jobFile, "Idempotency-Key", "k1"); again.status != 200 || again.body["job_id"] != id {
		t.Errorf("submit with the same Idempotency-Key: %d %s; want the first job", again.status, again.raw)
	}
	// A runner runs it.
	reg := engine.NewRegistry()
	runner, err := engine.OpenRunner(context.Background(), db, engine.RunnerConfig{Role: engine.RoleRun, Config: engine.Config{Registry: reg}})
	if err != nil {
		t.Fatal(err)
	}
	job, err := db.FindJob(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := runner.RunJob(context.Background(), job.ID); err != nil {
		t.Fatal(err)
	}
	runner.Close()

	if r := call(t, srv, "GET", "/api/v1/jobs/"+id[:8], ""); r.status != 200 || r.body["state"] != "failed" || r.body["failed"] != 1.0 {
		t.Errorf("job: %d %s", r.status, r.raw)
	}
	if r := call(t, srv, "GET", "/api/v1/jobs?state=failed&limit=5", ""); r.status != 200 || len(r.body["jobs"].([]any)) != 1 {
		t.Errorf("jobs?state=failed: %d %s", r.status, r.raw)
	}
	page := call(t, srv, "GET", "/api/v1/jobs/"+id+"/tasks?limit=2", "")
	if page.status != 200 || len(page.body["tasks"].([]any)) != 2 || page.body["next_after"] != 2.0 {
		t.Errorf("tasks?limit=2: %d %s", page.status, page.raw)
	}
	rest := call(t, srv, "GET", "/api/v1/jobs/"+id+"/tasks?after=2", "")
	if tasks := rest.body["tasks"].([]any); len(tasks) != 1 || tasks[0].(map[string]any)["number"] != 3.0 || rest.body["next_after"] != nil {
		t.Errorf("tasks?after=2: %s", rest.raw)
	}
	if r := call(t, srv, "GET", "/api/v1/jobs/"+id+"/tasks?state=failed", ""); len(r.body["tasks"].([]any)) != 1 {
		t.Errorf("tasks?state=failed: %s", r.raw)
	}
	if r := call(t, srv, "GET", "/api/v1/jobs/"+id+"/tasks/2", ""); r.status != 200 || r.body["error"] != "no" || r.body["state"] != "failed" {
		t.Errorf("task 2: %d %s", r.status, r.raw)
	}
	if r := call(t, srv, "GET", "/api/v1/jobs/"+id+"/callbacks", ""); r.status != 200 {
		t.Errorf("callbacks: %d %s", r.status, r.raw)
	}
	tp := call(t, srv, "GET", "/api/v1/throughput?minutes=5", "")
	if tp.status != 200 || tp.body["span_secs"] != 10.0 {
		t.Fatalf("throughput: %d %s", tp.status, tp.raw)
	}
	var ok, bad float64
	spans := tp.body["spans"].([]any)
	for _, sp := range spans {
		ok += sp.(map[string]any)["succeeded"].(float64)
		bad += sp.(map[string]any)["failed"].(float64)
	}
	if ok != 2 || bad != 1 || len(spans) < 29 || len(spans) > 31 {
		t.Errorf("throughput of the last 5 minutes: %v succeeded, %v failed in %d spans, want 2 and 1 in 30: %s", ok, bad, len(spans), tp.raw)
	}
	if r := call(t, srv, "GET", "/api/v1/status", ""); r.status != 200 || r.body["jobs"].(map[string]any)["failed"] != 1.0 || r.body["version"] != "test" {
		t.Errorf("status: %d %s", r.status, r.raw)
	}
	// Retry, then cancel: the state changes as the commands' do.
	if r := call(t, srv, "POST", "/api/v1/jobs/"+id+"/retry", ""); r.status != 200 || r.body["round"] != 1.0 || r.body["state"] != "pending" {
		t.Errorf("retry: %d %s", r.status, r.raw)
	}
	if r := call(t, srv, "POST", "/api/v1/jobs/"+id+"/pause", ""); r.status != 200 || r.body["paused"] != true {
		t.Errorf("pause: %d %s", r.status, r.raw)
	}
	if r := call(t, srv, "POST", "/api/v1/jobs/"+id+"/resume", ""); r.status != 200 || r.body["paused"] != nil {
		t.Errorf("resume: %d %s", r.status, r.raw)
	}
	if r := call(t, srv, "POST", "/api/v1/jobs/"+id+"/cancel", ""); r.status != 200 || r.body["state"] != "cancelled" {
		t.Errorf("cancel: %d %s", r.status, r.raw)
	}
}

// TestAPIErrors: errors are JSON, with the status and exit code of the
// command line's, and a bad request changes nothing.
func TestAPIErrors(t *testing.T) {
	srv, db := newServer(t, "")
	for _, c := range []struct {
		method, path, body string
		status             int
		code               string
		exit               float64
	}{
		{"GET", "/api/v1/jobs/0000", "", 404, "not_found", 5},
		{"GET", "/api/v1/jobs?limit=0", "", 400, "bad_request", 2},
		{"GET", "/api/v1/jobs?state=done", "", 400, "bad_request", 2},
		{"POST", "/api/v1/jobs", `{"tasks": [{"kind": "slep"}]}`, 400, "bad_request", 2},
		{"POST", "/api/v1/jobs", `{"tasks": [`, 400, "bad_request", 2},
		{"POST", "/api/v1/jobs", `{"tasks": [{"kind": "noop", "payload": "` + strings.Repeat("x", maxBody) + `"}]}`, 413, "too_large", 2},
		{"GET", "/api/v1/nothing", "", 404, "not_found", 5},
	} {
		r := call(t, srv, c.method, c.path, c.body)
		if r.status != c.status || r.body["code"] != c.code || r.body["exit_code"] != c.exit || r.body["error"] == "" {
			t.Errorf("%s %s: %d %.200s; want %d %s", c.method, c.path, r.status, r.raw, c.status, c.code)
		}
	}
	if n, _, err := db.UnfinishedSummary(context.Background()); err != nil || n != 0 {
		t.Errorf("bad requests made %d jobs (%v)", n, err)
	}
	// A finished job cannot be cancelled again (exit 7); no GET changes it.
	r := call(t, srv, "POST", "/api/v1/jobs", `{"tasks": [{"kind": "noop"}]}`)
	id := r.body["job_id"].(string)
	call(t, srv, "POST", "/api/v1/jobs/"+id+"/cancel", "")
	if r := call(t, srv, "POST", "/api/v1/jobs/"+id+"/cancel", ""); r.status != 409 || r.body["exit_code"] != 7.0 {
		t.Errorf("cancel twice: %d %s", r.status, r.raw)
	}
	if r := call(t, srv, "GET", "/api/v1/jobs/"+id+"/cancel", ""); r.status != 404 && r.status != 405 {
		t.Errorf("GET of an action: %d, want it refused", r.status)
	}
}

// TestAPISecurity: with a token every API request needs it, the health
// checks do not; a request from another site may not change anything.
func TestAPISecurity(t *testing.T) {
	const token = "0123456789abcdef-secret"
	srv, _ := newServer(t, token)
	if r := call(t, srv, "GET", "/api/v1/jobs", ""); r.status != 401 || r.body["code"] != "unauthorized" {
		t.Errorf("no token: %d %s", r.status, r.raw)
	}
	if r := call(t, srv, "GET", "/api/v1/jobs", "", "Authorization", "Bearer wrong-token-0000000"); r.status != 401 {
		t.Errorf("a wrong token: %d", r.status)
	}
	if r := call(t, srv, "GET", "/api/v1/jobs", "", "Authorization", "Bearer "+token); r.status != 200 {
		t.Errorf("the token: %d %s", r.status, r.raw)
	}
	if r := call(t, srv, "GET", "/healthz", ""); r.status != 200 {
		t.Errorf("healthz without a token: %d", r.status)
	}
	auth := []string{"Authorization", "Bearer " + token}
	evil := append([]string{"Origin", "https://evil.example"}, auth...)
	if r := call(t, srv, "POST", "/api/v1/jobs", `{"tasks": [{"kind": "noop"}]}`, evil...); r.status != 403 || r.body["code"] != "cross_origin" {
		t.Errorf("a submit from another origin: %d %s", r.status, r.raw)
	}
	same := append([]string{"Origin", srv.URL}, auth...)
	if r := call(t, srv, "POST", "/api/v1/jobs", `{"tasks": [{"kind": "noop"}]}`, same...); r.status != 201 {
		t.Errorf("a submit from the same origin: %d %s", r.status, r.raw)
	}
	if !Loopback("127.0.0.1:8700") || !Loopback("[::1]:80") || !Loopback("localhost:1") || Loopback(":8700") || Loopback("0.0.0.0:1") || Loopback("10.0.0.1:1") {
		t.Errorf("Loopback misjudges an address")
	}
}

// TestAPIRefusesForeignHosts: without a token, a request whose Host is not
// loopback is refused before it reaches anything, so DNS rebinding (a
// page whose own name resolves to 127.0.0.1, sending its own Host and a
// matching Origin) can neither read nor submit. A token needs no such
// check: the page cannot know it.
func TestAPIRefusesForeignHosts(t *testing.T) {
	srv, db := newServer(t, "")
	const job = `{"tasks":[{"kind":"exec","payload":{"shell":"id > /tmp/pwned"}}]}`
	rebound := []string{"Host", "evil.example:18777", "Origin", "http://evil.example:18777", "Content-Type", "text/plain"}
	if r := call(t, srv, "POST", "/api/v1/jobs", job, rebound...); r.status != http.StatusMisdirectedRequest || r.body["code"] != "misdirected" {
		t.Errorf("a rebound submit: %d %s", r.status, r.raw)
	}
	for _, path := range []string{"/api/v1/jobs", "/api/v1/status", "/metrics", "/", "/ui/app.js", "/readyz"} {
		if r := call(t, srv, "GET", path, "", "Host", "evil.example:18777"); r.status != http.StatusMisdirectedRequest {
			t.Errorf("GET %s with a foreign Host: %d %.200s", path, r.status, r.raw)
		}
	}
	if n, err := db.CountJobs(context.Background()); err != nil || len(n) != 0 {
		t.Fatalf("a refused submit wrote jobs: %v (%v)", n, err)
	}
	for _, host := range []string{"localhost:8700", "LOCALHOST", "localhost.", "127.0.0.1:1", "127.1.2.3", "[::1]:8700", "::1"} {
		if r := call(t, srv, "GET", "/api/v1/jobs", "", "Host", host); r.status != 200 {
			t.Errorf("Host %s: %d %s", host, r.status, r.raw)
		}
	}
	for _, host := range []string{"localhost.evil.example", "127.0.0.1.nip.io", "10.0.0.1:8700", "[::2]:80", "evil.localhost"} {
		if r := call(t, srv, "GET", "/api/v1/jobs", "", "Host", host); r.status != http.StatusMisdirectedRequest {
			t.Errorf("Host %s: %d %s", host, r.status, r.raw)
		}
	}

	allowed := httptest.NewServer(Handler(clientOf(db), Options{Version: "test", AllowHosts: []string{"pcd.internal"}}))
	defer allowed.Close()
	if r := call(t, allowed, "GET", "/api/v1/jobs", "", "Host", "PCD.internal:8700"); r.status != 200 {
		t.Errorf("an allowed Host: %d %s", r.status, r.raw)
	}
	if r := call(t, allowed, "GET", "/api/v1/jobs", "", "Host", "evil.example"); r.status != http.StatusMisdirectedRequest {
		t.Errorf("a foreign Host beside an allowed one: %d %s", r.status, r.raw)
	}

	const token = "0123456789abcdef-secret"
	guarded, _ := newServer(t, token)
	if r := call(t, guarded, "GET", "/api/v1/jobs", "", "Host", "pcd.example.com", "Authorization", "Bearer "+token); r.status != 200 {
		t.Errorf("a token with any Host: %d %s", r.status, r.raw)
	}
	if r := call(t, guarded, "GET", "/api/v1/jobs", "", "Host", "pcd.example.com"); r.status != 401 {
		t.Errorf("no token with any Host: %d %s", r.status, r.raw)
	}
}

// TestOpenAPIDocumentsEveryRoute: openapi.json is valid JSON, served, and
// documents every route the API serves.
func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(openapiJSON, &doc); err != nil || doc.OpenAPI == "" {
		t.Fatalf("openapi.json: %v", err)
	}
	for _, rt := range (&server{}).routes() {
		if doc.Paths[rt.path][strings.ToLower(rt.method)] == nil {
			t.Errorf("openapi.json does not document %s %s", rt.method, rt.path)
		}
	}
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		if doc.Paths[p]["get"] == nil {
			t.Errorf("openapi.json does not document GET %s", p)
		}
	}
	srv, _ := newServer(t, "")
	if r := call(t, srv, "GET", "/api/v1/openapi.json", ""); r.status != 200 || r.body["openapi"] != "3.1.0" {
		t.Errorf("GET /api/v1/openapi.json: %d", r.status)
	}
}

// TestSubmitNDJSON: NDJSON tasks streamed in the body make a job, as pcd
// submit - does; a bad line is a 400 naming it, and writes nothing here.
func TestSubmitNDJSON(t *testing.T) {
	srv, db := newServer(t, "")
	lines := `{"kind": "noop"}` + "\n" + `{"kind": "sleep", "payload": {"secs": 0}}` + "\n" + `{"kind": "noop"}` + "\n"
	r := call(t, srv, "POST", "/api/v1/jobs?name=streamed&workers=2", lines, "Content-Type", "application/x-ndjson")
	if r.status != 201 || r.body["total"] != 3.0 || r.body["name"] != "streamed" || r.body["workers"] != 2.0 || r.body["sealed"] != true {
		t.Fatalf("NDJSON submit: %d %s", r.status, r.raw)
	}
	r = call(t, srv, "POST", "/api/v1/jobs", `{"kind": "noop"}`+"\n"+`{"kind": "slep"}`+"\n", "Content-Type", "application/x-ndjson")
	if r.status != 400 || !strings.Contains(r.body["error"].(string), "line 2") {
		t.Errorf("a bad line: %d %s", r.status, r.raw)
	}
	if r := call(t, srv, "POST", "/api/v1/jobs?workers=0", lines, "Content-Type", "application/x-ndjson"); r.status != 400 {
		t.Errorf("workers=0: %d", r.status)
	}
	jobs, err := db.ListJobs(context.Background(), store.JobFilter{Limit: 10})
	if err != nil || len(jobs) != 1 {
		t.Errorf("jobs after one good and two bad streams: %d, %v", len(jobs), err)
	}
}

// TestJobsPages: the jobs list comes a page at a time, newest first,
// filtered by name (case folded) and state, each job once.
func TestJobsPages(t *testing.T) {
	srv, _ := newServer(t, "")
	for i := range 7 {
		name := fmt.Sprintf("nightly-%d", i)
		if i%2 == 1 {
			name = fmt.Sprintf("Backup-%d", i)
		}
		if r := call(t, srv, "POST", "/api/v1/jobs", `{"name": "`+name+`", "tasks": [{"kind": "noop"}]}`); r.status != 201 {
			t.Fatalf("submit: %d %s", r.status, r.raw)
		}
	}
	var names []string
	path := "/api/v1/jobs?limit=3"
	for pages := 0; path != ""; pages++ {
		if pages > 3 {
			t.Fatal("the pages do not end")
		}
		r := call(t, srv, "GET", path, "")
		if r.status != 200 {
			t.Fatalf("%s: %d %s", path, r.status, r.raw)
		}
		for _, j := range r.body["jobs"].([]any) {
			names = append(names, j.(map[string]any)["name"].(string))
		}
		path = ""
		if next, ok := r.body["next_before"].(float64); ok {
			path = fmt.Sprintf("/api/v1/jobs?limit=3&before=%d", int64(next))
		}
	}
	want := "nightly-6 Backup-5 nightly-4 Backup-3 nightly-2 Backup-1 nightly-0"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("jobs page by page: %s, want %s", got, want)
	}
	r := call(t, srv, "GET", "/api/v1/jobs?name=BACKUP&state=pending&limit=100", "")
	var got []string
	for _, j := range r.body["jobs"].([]any) {
		got = append(got, j.(map[string]any)["name"].(string))
	}
	if strings.Join(got, " ") != "Backup-5 Backup-3 Backup-1" || r.body["next_before"] != nil {
		t.Errorf("jobs?name=BACKUP: %s", r.raw)
	}
	for _, bad := range []string{"/api/v1/throughput?minutes=0", "/api/v1/throughput?minutes=10081", "/api/v1/jobs?limit=0"} {
		if r := call(t, srv, "GET", bad, ""); r.status != 400 || r.body["exit_code"] != 2.0 {
			t.Errorf("%s: %d %s, want 400 with exit code 2", bad, r.status, r.raw)
		}
	}
	if r := call(t, srv, "GET", "/api/v1/jobs?before=-1", ""); r.status != 400 {
		t.Errorf("before=-1: %d %s, want 400", r.status, r.raw)
	}
}

// clientOf is a Client of db, as the server takes it.
func clientOf(db store.Store) *engine.Client { return engine.NewClient(db, engine.RunnerConfig{}) }

// The API's cancel answers once the job's runner has stopped its running
// tasks, as pcd cancel does: no task of the job runs after the answer.
func TestCancelAnswersOnceTheTasksStopped(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "pcd.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var started, stopped atomic.Int64
	reg := engine.NewRegistry()
	reg.Register("wait", engine.Func(func(ctx context.Context, _ engine.Task) (json.RawMessage, error) {
		started.Add(1)
		<-ctx.Done()
		time.Sleep(100 * time.Millisecond) // a task that takes a while to stop
		stopped.Add(1)
		return nil, ctx.Err()
	}))
	daemon := engine.NewClient(db, engine.RunnerConfig{Config: engine.Config{Registry: reg}})
	if err := daemon.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer daemon.Close()
	job, err := daemon.Submit(ctx, engine.JobFile{Workers: 3, Tasks: []engine.TaskSpec{{Kind: "wait"}, {Kind: "wait"}, {Kind: "wait"}, {Kind: "wait"}}})
	if err != nil {
		t.Fatal(err)
	}
	for started.Load() < 3 {
		time.Sleep(5 * time.Millisecond)
	}
	srv := httptest.NewServer(Handler(clientOf(db), Options{}))
	defer srv.Close()
	r := call(t, srv, "POST", "/api/v1/jobs/"+job.UUID+"/cancel", "")
	if r.status != http.StatusOK || r.body["state"] != "cancelled" {
		t.Fatalf("cancel: %d %s", r.status, r.raw)
	}
	if n := stopped.Load(); n != 3 {
		t.Fatalf("the cancel answered with %d of the 3 running tasks stopped", n)
	}
	if n := started.Load(); n != 3 {
		t.Fatalf("%d tasks started, want the 3 that ran before the cancel", n)
	}
}
