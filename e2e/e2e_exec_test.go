package e2e_test

// Exec tasks, retries, hooks and webhooks, end to end.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestExecTasksFromTheCommandLine(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	r := pcd(t, db, "run", "--json", "--", "sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 4")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1: %s", r.code, r.stderr)
	}
	evs := parseEvents(t, r.stdout)
	var task struct {
		TaskID string `json:"task_id"`
		Error  string `json:"error"`
		Result struct {
			ExitCode int    `json:"exit_code"`
			Stdout   string `json:"stdout"`
		} `json:"result"`
	}
	json.Unmarshal([]byte(strings.Split(strings.TrimSpace(r.stdout), "\n")[1]), &task)
	if len(evs) != 2 || task.Error != "exit status 4" || task.Result.ExitCode != 4 || task.Result.Stdout != "to-stdout\n" {
		t.Fatalf("events %s", r.stdout)
	}
	logs := pcd(t, db, "logs", task.TaskID[:20])
	if logs.code != 0 || logs.stdout != "to-stdout\n" || logs.stderr != "to-stderr\n" {
		t.Errorf("pcd logs: exit %d, stdout %q, stderr %q", logs.code, logs.stdout, logs.stderr)
	}

	lines := filepath.Join(dir, "lines.txt")
	os.WriteFile(lines, []byte("echo one\n\n# a comment\necho two > "+filepath.Join(dir, "two.txt")+"\n"), 0o600)
	if r := pcd(t, db, "run", "--lines", lines); r.code != 0 || r.stdout != "one\n" {
		t.Fatalf("--lines: exit %d, %s %s", r.code, r.stdout, r.stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "two.txt")); string(b) != "two\n" {
		t.Errorf("the second line did not run: %q", b)
	}
	before := fileSum(t, db)
	for args, want := range map[string]string{
		"run -- no-such-command-pcd":                 `command "no-such-command-pcd" not found in PATH`,
		"submit --webhook ftp://example.com -- true": "scheme must be http or https",
		"submit --webhook ::bad -- true":             "missing protocol scheme",
		"submit --on-task no-such-hook-pcd -- true":  `on_task hook: command "no-such-hook-pcd" not found`,
		"run --max-attempts 0 -- true":               "--max-attempts must be at least 1",
	} {
		r := pcd(t, db, strings.Fields(args)...)
		if r.code != 2 || !strings.Contains(r.stderr, want) {
			t.Errorf("pcd %s: exit %d, stderr %q; want 2 and %q", args, r.code, r.stderr, want)
		}
	}
	job := filepath.Join(dir, "job.json")
	os.WriteFile(job, []byte(`{"tasks": [{"kind": "exec", "payload": {"argv": []}}]}`), 0o600)
	if r := pcd(t, db, "submit", job); r.code != 2 || !strings.Contains(r.stderr, `"argv" is empty`) {
		t.Errorf("empty argv: exit %d, %q", r.code, r.stderr)
	}
	os.WriteFile(job, []byte(`{"tasks": [{"kind": "exec", "payload": {"argv": ["true"], "dir": "/no/such/dir"}}]}`), 0o600)
	if r := pcd(t, db, "submit", job); r.code != 2 || !strings.Contains(r.stderr, "dir: stat /no/such/dir") {
		t.Errorf("missing dir: exit %d, %q", r.code, r.stderr)
	}
	if fileSum(t, db) != before {
		t.Error("bad input changed the database")
	}
}

func TestHooksReceiveEveryEventOnce(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	taskLog, jobLog := filepath.Join(dir, "tasks.ndjson"), filepath.Join(dir, "jobs.ndjson")
	// Each hook is this test binary, appending its stdin and environment
	// as one JSON line (see hookHelper).
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	hook := func(out string) string { return "env PCD_TEST_HOOK_OUT=" + out + " " + self }
	r := pcd(t, db, "run", "--on-task", hook(taskLog), "--on-job", hook(jobLog), "--workers", "4", "../testdata/jobs/sleeps.json")
	if r.code != 0 {
		t.Fatalf("run: exit %d: %s", r.code, r.stderr)
	}
	read := func(path string) []map[string]any {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var out []map[string]any
		for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
			var e map[string]any
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("hook line %q: %v", line, err)
			}
			out = append(out, e)
		}
		return out
	}
	tasks, jobs := read(taskLog), read(jobLog)
	seen := map[float64]int{}
	for _, e := range tasks {
		seen[e["callback_id"].(float64)]++
		env := e["env"].(map[string]any)
		if env["PCD_EVENT"] != "task" || env["PCD_TASK_ID"] != e["task_id"] || env["PCD_STATE"] != "succeeded" ||
			env["PCD_CALLBACK_ID"] != strconv.Itoa(int(e["callback_id"].(float64))) || env["PCD_JOB_ID"] != e["job_id"] {
			t.Errorf("hook environment %v does not match the event %v", env, e)
		}
	}
	if len(tasks) != 5 || len(seen) != 5 {
		t.Errorf("the task hook ran %d times for %d callbacks, want 5 and 5", len(tasks), len(seen))
	}
	if len(jobs) != 1 || jobs[0]["outcome"] != "succeeded" || jobs[0]["env"].(map[string]any)["PCD_EVENT"] != "job" {
		t.Errorf("job hook got %v", jobs)
	}
}

// hookHelper is what the test binary does when run as a hook: it appends
// the event from stdin, with the PCD_* environment under "env", to the file
// PCD_TEST_HOOK_OUT names; with PCD_TEST_HOOK_LINGER it then waits that
// long before it exits.
func hookHelper(out string) int {
	var ev map[string]any
	if err := json.NewDecoder(os.Stdin).Decode(&ev); err != nil {
		fmt.Fprintln(os.Stderr, "hook:", err)
		return 1
	}
	env := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "PCD_") && !strings.HasPrefix(k, "PCD_TEST_HOOK_") {
			env[k] = v
		}
	}
	ev["env"] = env
	line, _ := json.Marshal(ev)
	f, err := os.OpenFile(out, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hook:", err)
		return 1
	}
	defer f.Close()
	if _, err := f.Write(append(line, '\n')); err != nil {
		return 1
	}
	if linger, err := time.ParseDuration(os.Getenv("PCD_TEST_HOOK_LINGER")); err == nil {
		time.Sleep(linger)
	}
	return 0
}

// receiver is a webhook endpoint that records deliveries.
type receiver struct {
	mu       sync.Mutex
	byKey    map[string][]string // Idempotency-Key -> status codes sent
	bodies   map[string]string
	failures map[string]int // fail this many first attempts per key
	down     bool
}

func newReceiver() *receiver {
	return &receiver{byKey: map[string][]string{}, bodies: map[string]string{}, failures: map[string]int{}}
}

func (rv *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	key := r.Header.Get("Idempotency-Key")
	var body strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := r.Body.Read(buf)
		body.Write(buf[:n])
		if err != nil {
			break
		}
	}
	status := http.StatusOK
	if rv.down || len(rv.byKey[key]) < rv.failures[key] {
		status = http.StatusServiceUnavailable
	}
	rv.byKey[key] = append(rv.byKey[key], strconv.Itoa(status))
	if status == http.StatusOK {
		rv.bodies[key] = body.String()
	}
	w.WriteHeader(status)
}

func (rv *receiver) delivered() int {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	return len(rv.bodies)
}

func TestWebhookRetriesWithTheSameKey(t *testing.T) {
	rv := newReceiver()
	rv.failures["1"], rv.failures["2"] = 2, 2
	srv := httptest.NewServer(rv)
	defer srv.Close()
	db := filepath.Join(t.TempDir(), "pcd.db")
	r := pcd(t, db, "run", "--no-output", "--webhook", srv.URL+"/hook", "--delivery-backoff", "20ms", "--", "true")
	if r.code != 0 {
		t.Fatalf("run: exit %d: %s", r.code, r.stderr)
	}
	rv.mu.Lock()
	for _, key := range []string{"1", "2"} {
		if got := strings.Join(rv.byKey[key], " "); got != "503 503 200" {
			t.Errorf("Idempotency-Key %s: responses %q, want 503 503 200", key, got)
		}
		var ev map[string]any
		json.Unmarshal([]byte(rv.bodies[key]), &ev)
		if fmt.Sprint(ev["callback_id"]) != key {
			t.Errorf("body %q does not carry callback_id %s", rv.bodies[key], key)
		}
	}
	rv.mu.Unlock()
	id := parseOutput(t, r.stdout).job
	cb := pcd(t, db, "callbacks", "--json", id)
	webhookRows := 0
	for _, line := range strings.Split(strings.TrimSpace(cb.stdout), "\n") {
		var v struct {
			Sink      string `json:"sink"`
			State     string `json:"state"`
			Attempts  int    `json:"attempts"`
			LastError string `json:"last_error"`
		}
		json.Unmarshal([]byte(line), &v)
		if strings.HasPrefix(v.Sink, "webhook ") {
			webhookRows++
			if v.State != "delivered" || v.Attempts != 3 || !strings.Contains(v.LastError, "503") {
				t.Errorf("webhook delivery state %+v, want delivered after 3 attempts with the last error kept", v)
			}
		}
	}
	if webhookRows != 2 {
		t.Errorf("%d webhook rows in pcd callbacks, want 2:\n%s", webhookRows, cb.stdout)
	}
}

func TestWebhookDownForTheWholeJob(t *testing.T) {
	rv := newReceiver()
	rv.down = true
	srv := httptest.NewServer(rv)
	defer srv.Close()
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	job := writeJob(t, dir, "job.json", 20, `{"kind":"sleep","payload":{"secs":0.01}}`)
	id := strings.TrimSpace(pcd(t, db, "submit", "--workers", "4", "--webhook", srv.URL, job).stdout)
	d := startDaemon(t, db, "--delivery-backoff", "20ms", "--delivery-backoff-cap", "100ms", "--delivery-attempts", "1000")
	start := time.Now()
	if w := pcd(t, db, "watch", id); w.code != 0 {
		t.Fatalf("watch: exit %d: %s", w.code, w.stderr)
	}
	// 20 sleeps of 10 ms on 4 workers: the job is not held up by the sink.
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the job took %v with its webhook down", took)
	}
	if rv.delivered() != 0 {
		t.Fatal("delivered while down")
	}
	// The first callback is tried again while the receiver stays down
	// (the job may have ended before a second try).
	deadline := time.Now().Add(30 * time.Second)
	for {
		rv.mu.Lock()
		tries := len(rv.byKey["1"])
		if tries >= 2 {
			rv.down = false
		}
		rv.mu.Unlock()
		if tries >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the first callback was tried %d times in 30s while the receiver was down", tries)
		}
		time.Sleep(5 * time.Millisecond)
	}
	deadline = time.Now().Add(30 * time.Second)
	for rv.delivered() < 21 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := rv.delivered(); got != 21 {
		t.Fatalf("%d callbacks delivered after the receiver came back, want 21", got)
	}
	stopDaemon(t, d)
	rv.mu.Lock()
	defer rv.mu.Unlock()
	for key, codes := range rv.byKey {
		if n := strings.Count(strings.Join(codes, " "), "200"); n != 1 {
			t.Errorf("callback %s delivered %d times", key, n)
		}
	}
}

func TestDeadDelivery(t *testing.T) {
	rv := newReceiver()
	rv.down = true
	srv := httptest.NewServer(rv)
	defer srv.Close()
	db := filepath.Join(t.TempDir(), "pcd.db")
	r := pcd(t, db, "run", "--no-output", "--webhook", srv.URL, "--delivery-attempts", "2", "--delivery-backoff", "10ms", "--", "true")
	if r.code != 0 {
		t.Fatalf("run: exit %d: %s", r.code, r.stderr)
	}
	cb := pcd(t, db, "callbacks", parseOutput(t, r.stdout).job)
	if strings.Count(cb.stdout, " dead ") != 2 || !strings.Contains(cb.stdout, "503 Service Unavailable") {
		t.Errorf("pcd callbacks after a dead webhook:\n%s", cb.stdout)
	}
}

// TestRetriesOfARealCommand runs a command that fails twice, then
// succeeds, and checks the attempts and the single callback.
func TestRetriesOfARealCommand(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	counter := filepath.Join(dir, "count")
	script := `n=$(cat ` + counter + ` 2>/dev/null || echo 0); n=$((n+1)); echo $n > ` + counter + `; echo "try $n" >&2; [ $n -ge 3 ]`
	r := pcd(t, db, "run", "--json", "--max-attempts", "5", "--backoff-base", "50ms", "--", "sh", "-c", script)
	if r.code != 0 {
		t.Fatalf("run: exit %d: %s", r.code, r.stderr)
	}
	evs := parseEvents(t, r.stdout)
	if len(evs) != 2 || evs[0].State != "succeeded" {
		t.Fatalf("events: %s", r.stdout)
	}
	if !strings.Contains(r.stdout, `"attempts":3`) {
		t.Errorf("the task callback does not say 3 attempts: %s", r.stdout)
	}
	a := pcd(t, db, "tasks", "--attempts", "--json", evs[0].JobID)
	lines := strings.Split(strings.TrimSpace(a.stdout), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], `"state":"failed"`) || !strings.Contains(lines[0], `"error":"exit status 1"`) ||
		!strings.Contains(lines[2], `"state":"succeeded"`) {
		t.Errorf("attempts:\n%s", a.stdout)
	}
	var first, second struct {
		StartedAt  time.Time `json:"started_at"`
		FinishedAt time.Time `json:"finished_at"`
	}
	json.Unmarshal([]byte(lines[0]), &first)
	json.Unmarshal([]byte(lines[1]), &second)
	if gap := second.StartedAt.Sub(first.FinishedAt); gap < 25*time.Millisecond {
		t.Errorf("the second attempt started %v after the first ended: no backoff", gap)
	}
}
