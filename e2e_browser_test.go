package main_test

import (
	"context"
	"encoding/json"
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

// The dashboard in headless Chromium (issue 15): a job submitted through
// the API shows its progress live, to 100 %, with no reload; a failed
// task's error and output are one click away, and output holding
// <script> is text; a running job is cancelled with its button. It saves
// screenshots of the overview and of a job page (PCD_SCREENSHOTS=DIR
// keeps them; the README shows them).
func TestDashboardInABrowser(t *testing.T) {
	browser := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			browser = p
			break
		}
	}
	if browser == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("no Chromium: .ci/run installs Debian's chromium package")
		}
		t.Skip("no Chromium")
	}
	db := filepath.Join(t.TempDir(), "pcd.db")
	d := controlDaemon(t, db, "--http", "127.0.0.1:0", "--max-jobs", "4")
	defer stopDaemon(t, d)
	m := regexp.MustCompile(`http api listening addr=(\S+)`).FindStringSubmatch(d.stderr.String())
	if m == nil {
		t.Fatalf("no address: %s", d.stderr)
	}
	base := "http://" + m[1]

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(browser), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	defer cancelCtx()
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	defer cancelTimeout()
	// Confirm every dialog: the buttons ask before they change anything.
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for _, err := range dialogs {
			if err != nil {
				return
			}
			chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	shots := os.Getenv("PCD_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	// The test drives the page by JavaScript: eval returns an
	// expression's value; waitFor polls one until it is true.
	eval := func(js string) any {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[any](js))
		if err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		return v
	}
	waitFor := func(what, js string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for eval("!!("+js+")") != true {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not so after 60 s (%s)", what, js)
			}
			time.Sleep(30 * time.Millisecond)
		}
	}
	screenshot := func(name string) {
		t.Helper()
		shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if err := os.MkdirAll(shots, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(shots, name), shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Open the dashboard first, then submit: the page sees the job live.
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/#/jobs")); err != nil {
		t.Fatalf("open the dashboard: %v", err)
	}
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
	screenshot("job.png")

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

	// Cancel a running job with its button.
	long := postJob(t, base, `{"name": "long", "tasks": [{"kind": "exec", "payload": {"argv": ["sleep", "60"]}}, {"kind": "exec", "payload": {"argv": ["sleep", "60"]}}]}`)
	eval(`location.hash = "#/jobs/` + long + `"`)
	waitFor("the long job runs", `document.getElementById("job-state") && document.getElementById("job-state").textContent === "running"`)
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
