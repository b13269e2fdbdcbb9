package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// The dashboard in headless Chromium: a job submitted through
// the API shows its progress live, to 100 %, with no reload; a failed
// task's error and output are one click away, and output holding
// <script> is text; a running job is cancelled with its button. It saves
// screenshots of the overview and of a job page (PCD_SCREENSHOTS=DIR
// keeps them; docs/http-api.md shows them).
func TestDashboardInABrowser(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	d := controlDaemon(t, db, "--http", "127.0.0.1:0", "--max-jobs", "4")
	defer stopDaemon(t, d)
	base := httpBase(t, d)
	b := openBrowser(t)
	eval, waitFor, screenshot := b.eval, b.waitFor, b.screenshot

	// Open the dashboard first, then submit: the page sees the job live.
	b.open(base + "/#/jobs")
	waitFor("the jobs page", `document.getElementById("jobs")`)
	eval(`window.__noReload = 1`)
	id := postJob(t, base, `{"name": "thumbnails", "workers": 2, "tasks": [`+
		strings.Repeat(`{"kind": "exec", "payload": {"argv": ["sh", "-c", "sleep 0.2; echo done"]}},`, 12)+
		`{"kind": "exec", "payload": {"argv": ["sh", "-c", "echo '<script>document.title=\"owned\"</script>'; echo oops >&2; exit 3"]}}]}`)
	eval(`location.hash = "#/jobs/` + id + `"`)
	waitFor("the job page", `document.querySelector("#job-head [role=progressbar]")`)
	seen := map[string]bool{}
	deadline := time.Now().Add(60 * time.Second)
	for {
		pct, _ := eval(`document.querySelector("#job-head [role=progressbar]").dataset.pct`).(string)
		state, _ := eval(`document.getElementById("job-state").textContent`).(string)
		seen[pct] = true
		if pct == "100" && state == "failed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("progress %s%%, state %s after 60 s", pct, state)
		}
		time.Sleep(30 * time.Millisecond)
	}
	if len(seen) < 3 || eval(`window.__noReload === 1`) != true {
		t.Errorf("the progress bar showed %v (want it to move), or the page reloaded", seen)
	}
	// The rows follow, though the stream brings only a sample of the
	// successes; the failed task moves to the top.
	waitFor("every row up to date", `document.querySelectorAll('#tasks tr[data-state="succeeded"]').length === 12 && document.querySelector("#tasks tr[data-task]").dataset.task === "13"`)
	screenshot("job.png")
	// A task's command is in its row; a finished job offers retry alone.
	waitFor("task 1's command", `document.querySelector('tr[data-task="1"] td.command').textContent === "sh -c 'sleep 0.2; echo done'"`)
	// Its command's CPU time, and its peak memory: "-" for one below the
	// runner's.
	waitFor("task 1's CPU time and peak memory", `/^(-|[0-9.]+ [KM]iB)$/.test(document.querySelector('tr[data-task="1"] td.mem').textContent) && /^[0-9.]+m?s$/.test(document.querySelector('tr[data-task="1"] td.cpu').textContent)`)
	waitFor("a failed job's buttons: retry alone", `["pause", "resume", "cancel"].every((a) => document.getElementById("action-" + a).hidden) && !document.getElementById("action-retry").hidden`)

	// The failed task: its error and its output, as text.
	waitFor("the failed task's row", `document.querySelector('tr[data-task="13"] a.task')`)
	eval(`document.querySelector('tr[data-task="13"] a.task').click()`)
	waitFor("the task's output", `document.getElementById("task-stdout")`)
	stdout, _ := eval(`document.getElementById("task-stdout").textContent`).(string)
	errText, _ := eval(`document.querySelector("#task-output .error").textContent`).(string)
	scripts := eval(`document.querySelectorAll("#task-output script").length`)
	title := eval(`document.title`)
	if !strings.Contains(stdout, `<script>document.title="owned"</script>`) || scripts != 0.0 || title == "owned" {
		t.Errorf("the task's output: %q, %v script elements, title %v; want the markup shown as text", stdout, scripts, title)
	}
	if errText != "exit status 3" {
		t.Errorf("the failed task's error: %q", errText)
	}

	// The tasks filtered by state: the failed one alone, then the 12
	// that succeeded.
	eval(`document.getElementById("task-state-filter").value = "failed"; document.getElementById("task-state-filter").dispatchEvent(new Event("change"))`)
	waitFor("the failed tasks alone", `location.hash.endsWith("?state=failed") && document.querySelectorAll("#tasks tr[data-task]").length === 1 && document.querySelector('#tasks tr[data-task="13"]')`)
	eval(`location.hash = "#/jobs/` + id + `?state=succeeded"`)
	waitFor("the 12 that succeeded", `document.querySelectorAll('#tasks tr[data-state="succeeded"]').length === 12 && document.querySelectorAll("#tasks tr[data-task]").length === 12`)

	// A running job whose quick first task is done: its ETA waits for a
	// wave of tasks rather than guess from the quick one. Then it is
	// cancelled with its button.
	long := postJob(t, base, `{"name": "long", "workers": 2, "tasks": [{"kind": "exec", "payload": {"argv": ["true"]}}, {"kind": "exec", "payload": {"argv": ["sleep", "60"]}}, {"kind": "exec", "payload": {"argv": ["sleep", "60"]}}]}`)
	eval(`location.hash = "#/jobs/` + long + `"`)
	waitFor("the long job runs, a task done", `document.getElementById("job-state") && document.getElementById("job-state").textContent === "running" && document.querySelector('tr[data-task="1"]').dataset.state === "succeeded"`)
	// The head follows the rows: "-" until it shows the task done.
	etaCard := `[...document.querySelectorAll("#job-head .card")].find((c) => c.textContent.endsWith("ETA")).querySelector("b").textContent`
	waitFor("the head shows the task done", etaCard+` !== "-"`)
	if etaText, _ := eval(etaCard).(string); etaText != "…" {
		t.Errorf("the ETA of a job with one quick task done of three: %q, want … until a wave has ended", etaText)
	}
	if eval(`document.getElementById("action-retry").hidden && !document.getElementById("action-pause").hidden`) != true {
		t.Errorf("a running job's buttons: want pause, and no retry")
	}
	eval(`document.getElementById("action-cancel").click()`)
	waitFor("the job is cancelled", `document.getElementById("job-state").textContent === "cancelled"`)
	var apiState struct {
		State string `json:"state"`
	}
	getJSON(t, base+"/api/v1/jobs/"+long, &apiState)
	if apiState.State != "cancelled" {
		t.Errorf("the API says the job is %s", apiState.State)
	}

	// The overview, for its screenshot.
	eval(`location.hash = "#/"`)
	waitFor("the overview", `document.getElementById("throughput")`)
	time.Sleep(1200 * time.Millisecond)
	screenshot("overview.png")
}

// httpBase is the address a daemon's HTTP server listens on.
func httpBase(t *testing.T, d *proc) string {
	t.Helper()
	m := regexp.MustCompile(`http api listening addr=(\S+)`).FindStringSubmatch(d.stderr.String())
	if m == nil {
		t.Fatalf("no address: %s", d.stderr)
	}
	return "http://" + m[1]
}

// browser is headless Chromium, driven by JavaScript: eval returns an
// expression's value; waitFor polls one until it is true.
type browser struct {
	t   *testing.T
	ctx context.Context
}

// openBrowser starts Chromium with a fresh profile, as .ci/run's brief
// says, and confirms every dialog: the buttons ask before they change
// anything. No Chromium fails under CI and skips elsewhere.
func openBrowser(t *testing.T) *browser {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("no Chromium: .ci/run installs Debian's chromium package")
		}
		t.Skip("no Chromium")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	t.Cleanup(cancelCtx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancelTimeout)
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for _, err := range dialogs {
			if err != nil {
				return
			}
			chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	return &browser{t: t, ctx: ctx}
}

func (b *browser) eval(js string) any {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[any](js))
	if err != nil {
		b.t.Fatalf("%s: %v", js, err)
	}
	return v
}

func (b *browser) waitFor(what, js string) {
	b.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for b.eval("!!("+js+")") != true {
		if time.Now().After(deadline) {
			b.t.Fatalf("%s: not so after 60 s (%s)", what, js)
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// screenshot saves the page as name in PCD_SCREENSHOTS (docs/http-api.md's
// images), or a temporary directory.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	dir := os.Getenv("PCD_SCREENSHOTS")
	if dir == "" {
		dir = b.t.TempDir()
	}
	shot, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot: %v", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), shot, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func (b *browser) open(url string) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, chromedp.Navigate(url)); err != nil {
		b.t.Fatalf("open %s: %v", url, err)
	}
}

func postJob(t *testing.T, base, body string) string {
	t.Helper()
	resp, err := http.Post(base+"/api/v1/jobs", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var job struct {
		ID string `json:"job_id"`
	}
	json.NewDecoder(resp.Body).Decode(&job)
	if resp.StatusCode != 201 || job.ID == "" {
		t.Fatalf("submit: %d", resp.StatusCode)
	}
	return job.ID
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// TestDashboardAsksForTheToken: a daemon with a token. The dashboard asks
// for it, asks again when it is wrong, and keeps it for the session (a
// reload does not ask). The jobs page shows 100 jobs and pages to the
// rest; the name filter is the server's, case folded; the overview's
// chart counts the tasks the daemon ran, from the server's counts.
func TestDashboardAsksForTheToken(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	const token = "s3cret-token-for-the-dashboard"
	d := controlDaemon(t, db, "--http", "127.0.0.1:0", "--http-token", token, "--max-jobs", "8")
	defer stopDaemon(t, d)
	base := httpBase(t, d)
	call := func(method, path, body string, v any) int {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if v != nil {
			json.NewDecoder(resp.Body).Decode(v)
		}
		return resp.StatusCode
	}
	for i := range 130 {
		name := fmt.Sprintf("beta-%d", i)
		if i%13 == 0 {
			name = fmt.Sprintf("alpha-%d", i)
		}
		if code := call("POST", "/api/v1/jobs", `{"name": "`+name+`", "tasks": [{"kind": "noop"}]}`, nil); code != 201 {
			t.Fatalf("submit %d: %d", i, code)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var st struct {
			Jobs map[string]int `json:"jobs"`
		}
		call("GET", "/api/v1/status", "", &st)
		if st.Jobs["succeeded"] == 130 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("jobs after 60 s: %v", st.Jobs)
		}
		time.Sleep(50 * time.Millisecond)
	}

	b := openBrowser(t)
	b.open(base + "/#/jobs")
	b.waitFor("the token dialog", `document.getElementById("token-dialog").open`)
	b.eval(`document.getElementById("token-input").value = "wrong"; document.getElementById("token-form").requestSubmit()`)
	b.waitFor("the dialog, again, for a wrong token", `sessionStorage.getItem("pcd-token") === "wrong" && document.getElementById("token-dialog").open`)
	b.eval(`document.getElementById("token-input").value = "` + token + `"; document.getElementById("token-form").requestSubmit()`)
	b.waitFor("the newest 100 jobs", `document.querySelectorAll("#jobs tr[data-job]").length === 100`)
	if b.eval(`sessionStorage.getItem("pcd-token")`) != token {
		t.Errorf("the token is not kept in the session")
	}
	b.waitFor("the older jobs' button", `!document.getElementById("more-jobs").hidden`)
	b.eval(`document.getElementById("more-jobs").click()`)
	b.waitFor("all 130 jobs", `document.querySelectorAll("#jobs tr[data-job]").length === 130 && document.getElementById("more-jobs").hidden`)

	// A reload keeps the token; the name filter is the server's.
	b.open(base + "/?again#/jobs?name=ALPHA")
	b.waitFor("the 10 alpha jobs", `document.querySelectorAll("#jobs tr[data-job]").length === 10`)
	if open := b.eval(`document.getElementById("token-dialog").open`); open != false {
		t.Errorf("the dialog asked again after a reload")
	}
	names := b.eval(`[...document.querySelectorAll("#jobs tr[data-job] td:nth-child(2)")].map((td) => td.textContent).join(" ")`).(string)
	if strings.Count(names, "alpha-") != 10 || strings.Contains(names, "beta") {
		t.Errorf("jobs by name ALPHA: %s", names)
	}

	// The chart: the server's counts hold the daemon's 130 tasks.
	b.eval(`location.hash = "#/"`)
	b.waitFor("130 tasks in the chart", `(document.getElementById("throughput-note") || {textContent: ""}).textContent.startsWith("(130 tasks, peak ")`)
	if up := b.eval(`document.getElementById("daemons-card").textContent`).(string); !strings.Contains(up, "up since") {
		t.Errorf("the daemons card: %q", up)
	}
}

// A task whose runner was SIGKILLed while it ran is marked in the
// dashboard as one that may have run twice.
func TestDashboardMarksATaskThatMayHaveRunTwice(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	s := uniqueSleep(60)
	t.Cleanup(func() { killAll(processesWith("sleep", s)) })
	id := submitID(t, db, "--", "sleep", s)
	d := startDaemon(t, db)
	waitProcesses(t, 1, 30*time.Second, "sleep", s)
	d.cmd.Process.Kill()
	d.wait(t, 10*time.Second)
	d2 := controlDaemon(t, db, "--http", "127.0.0.1:0", "--grace", "100ms")
	defer stopDaemon(t, d2)
	b := openBrowser(t)
	b.open(httpBase(t, d2) + "/#/jobs/" + id)
	b.waitFor("the task's mark", `document.querySelector('tr[data-task="1"] .twice')`)
	if got, _ := b.eval(`document.querySelector('tr[data-task="1"] .twice').textContent`).(string); got != "may have run twice" {
		t.Errorf("the mark reads %q", got)
	}
}
