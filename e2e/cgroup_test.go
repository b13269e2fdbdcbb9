package e2e_test

// End-to-end tests of the limits per task: --memory and --cpus.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// needsLimits skips where this machine cannot enforce limits, with the
// reason pcd gives.
func needsLimits(t *testing.T, db string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("limits need root here; as another user pcd refuses them (TestLimitsRefusedWhereTheyCannotHold)")
	}
	if r := pcd(t, db, "run", "--memory", "64MiB", "--cpus", "1", "--", "true"); r.code != 0 {
		t.Skipf("this machine cannot enforce limits: %s", r.stderr)
	}
}

// taskResult is a task of pcd tasks --json, with its exec result.
type taskResult struct {
	Number   int     `json:"number"`
	TaskID   string  `json:"task_id"`
	State    string  `json:"state"`
	Attempts int     `json:"attempts"`
	Time     float64 `json:"time_secs"`
	Error    string  `json:"error"`
	Result   struct {
		MaxRSSKiB int64   `json:"max_rss_kib"`
		CPUSecs   float64 `json:"cpu_secs"`
		OOMKilled bool    `json:"oom_killed"`
		Stdout    string  `json:"stdout"`
	} `json:"result"`
}

func tasksOf(t *testing.T, db, job string) []taskResult {
	t.Helper()
	r := pcd(t, db, "tasks", "--json", job)
	if r.code != 0 {
		t.Fatalf("pcd tasks: %s", r.stderr)
	}
	var out []taskResult
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var tr taskResult
		if err := json.Unmarshal([]byte(line), &tr); err != nil {
			t.Fatalf("pcd tasks --json: %v: %s", err, line)
		}
		out = append(out, tr)
	}
	return out
}

// hog is a command that takes about 256 MiB, then says it survived.
const hog = `perl -e '$x = "a" x (256 << 20); print "survived\n"'`

// TestMemoryLimitFailsOnlyItsTask: a command over its --memory fails
// with its limit named, and spends its attempts as any failure; its
// siblings run on; its cgroup is gone after.
func TestMemoryLimitFailsOnlyItsTask(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	needsLimits(t, db)
	lines := filepath.Join(dir, "lines")
	if err := os.WriteFile(lines, []byte(hog+"\necho sibling-1\necho sibling-2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := pcd(t, db, "run", "--memory", "32MiB", "--max-attempts", "2", "--backoff-base", "10ms", "--lines", lines)
	if r.code != 1 || !strings.Contains(r.stderr, "killed: over its memory limit of 32 MiB") {
		t.Fatalf("pcd run: exit %d, want 1 and the limit named: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "sibling-1") || !strings.Contains(r.stdout, "sibling-2") || strings.Contains(r.stdout, "survived") {
		t.Errorf("stdout %q: want both siblings' lines, and not the hog's", r.stdout)
	}
	job := queryString(t, db, "SELECT uuid FROM jobs ORDER BY id DESC LIMIT 1")
	tasks := tasksOf(t, db, job)
	if len(tasks) != 3 {
		t.Fatalf("%d tasks, want 3", len(tasks))
	}
	hogged := tasks[0]
	if hogged.State != "failed" || hogged.Attempts != 2 || !hogged.Result.OOMKilled {
		t.Errorf("the hog: state %s after %d attempts, oom_killed %v; want failed after 2, true", hogged.State, hogged.Attempts, hogged.Result.OOMKilled)
	}
	if kib := hogged.Result.MaxRSSKiB; kib < 16<<10 || kib > 32<<10 {
		t.Errorf("the hog's peak is %d KiB, want near its limit of 32 MiB", kib)
	}
	for _, sib := range tasks[1:] {
		if sib.State != "succeeded" || sib.Result.OOMKilled {
			t.Errorf("sibling %d: %s (%s), oom_killed %v", sib.Number, sib.State, sib.Error, sib.Result.OOMKilled)
		}
	}
	for _, tr := range tasks {
		if left := cgroupsNamed(t, tr.TaskID); len(left) > 0 {
			t.Errorf("task %d's cgroups are still there: %v", tr.Number, left)
		}
	}
}

// TestCPULimitHolds: a busy loop under --cpus 0.25 gets about a quarter
// of a CPU, however long it runs.
func TestCPULimitHolds(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	needsLimits(t, db)
	r := pcd(t, db, "run", "--cpus", "0.25", "--timeout", "2s", "--", "sh", "-c", "while :; do :; done")
	if r.code != 1 || !strings.Contains(r.stderr, "timed out") {
		t.Fatalf("pcd run: exit %d, want 1 and a timeout: %s", r.code, r.stderr)
	}
	job := queryString(t, db, "SELECT uuid FROM jobs ORDER BY id DESC LIMIT 1")
	task := tasksOf(t, db, job)[0]
	// The quota caps the share; a busy machine can only lower it.
	if share := task.Result.CPUSecs / task.Time; task.Result.CPUSecs <= 0 || share > 0.4 {
		t.Errorf("the loop used %.2f s of CPU in %.2f s (%.2f of a CPU), want at most 0.4 under --cpus 0.25", task.Result.CPUSecs, task.Time, share)
	}
}

// TestLimitsRefusedWhereTheyCannotHold: as a user who may not make a
// cgroup, --memory, --cpus and the same in a job file are refused, with
// the reason, and nothing is written.
func TestLimitsRefusedWhereTheyCannotHold(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("runs pcd as another user, which needs root")
	}
	dir := sharedDir(t)
	bin := plainIn(t, dir)
	file := filepath.Join(dir, "job.json")
	if err := os.WriteFile(file, []byte(`{"memory": "64MiB", "tasks": [{"kind": "exec", "payload": {"argv": ["true"]}}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	taskFile := filepath.Join(dir, "task.json")
	if err := os.WriteFile(taskFile, []byte(`{"tasks": [{"kind": "exec", "payload": {"argv": ["true"], "cpus": 2}}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"submit", "--memory", "64MiB", "--", "true"},
		{"run", "--cpus", "1", "--", "true"},
		{"submit", file},
		{"submit", taskFile},
	} {
		cmd := exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--", bin}, args...)...)
		cmd.Env = append(os.Environ(), "PCD_DB="+filepath.Join(dir, "pcd.db"), "HOME="+dir)
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 {
			t.Errorf("pcd %v as nobody: %v, want exit 2: %s", args, err, out)
		}
		if !strings.Contains(string(out), "cannot be enforced here") || !strings.Contains(string(out), "root") {
			t.Errorf("pcd %v as nobody says %q, want why the limits cannot hold", args, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "pcd.db")); err == nil {
		if n := queryString(t, filepath.Join(dir, "pcd.db"), "SELECT count(*) FROM jobs"); n != "0" {
			t.Errorf("%s jobs written, want none", n)
		}
	}
}

// cgroupsNamed lists the cgroups, under this process's memory and cpu
// cgroups, whose name holds s.
func cgroupsNamed(t *testing.T, s string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || (parts[1] != "memory" && parts[1] != "cpu") {
			continue
		}
		root := filepath.Join("/sys/fs/cgroup", parts[1], parts[2])
		_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() && strings.Contains(d.Name(), s) {
				found = append(found, path)
			}
			return nil
		})
	}
	return found
}

// TestGroupAndJobLimitsOverTheAPI: on both stores, a daemon holds a
// group's memory limit for its commands together, and a job file's
// memory limit for each command, for jobs submitted over HTTP; its
// cgroups are gone once it stops.
func TestGroupAndJobLimitsOverTheAPI(t *testing.T) {
	for _, store := range bothStores {
		t.Run(store.name, func(t *testing.T) {
			db := store.db(t)
			needsLimits(t, db)
			if r := pcd(t, db, "group", "set", "lim", "--memory", "40MiB", "--cpus", "1.5"); r.code != 0 {
				t.Fatalf("pcd group set: %s", r.stderr)
			}
			if r := pcd(t, db, "group"); !strings.Contains(r.stdout, "40 MiB") || !strings.Contains(r.stdout, "1.5") {
				t.Errorf("pcd group shows %q, want the limits", r.stdout)
			}
			d := controlDaemon(t, db, "--http", "127.0.0.1:0")
			m := regexp.MustCompile(`http api listening addr=(\S+)`).FindStringSubmatch(d.stderr.String())
			if m == nil {
				t.Fatalf("no listening address in the log:\n%s", d.stderr)
			}
			post := func(body string) string {
				t.Helper()
				resp, err := http.Post("http://"+m[1]+"/api/v1/jobs", "application/json", strings.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var job struct {
					ID string `json:"job_id"`
				}
				if err := json.NewDecoder(resp.Body).Decode(&job); err != nil || resp.StatusCode != http.StatusCreated {
					t.Fatalf("POST /api/v1/jobs: %d %v", resp.StatusCode, err)
				}
				return job.ID
			}
			hogTask := func(mib int) string {
				return fmt.Sprintf(`{"kind": "exec", "payload": {"argv": ["perl", "-e", "$x = \"a\" x (%d << 20)"]}}`, mib)
			}
			grouped := post(`{"group": "lim", "tasks": [` + hogTask(100) + `, {"kind": "exec", "payload": {"argv": ["true"]}}]}`)
			limited := post(`{"memory": "24MiB", "tasks": [` + hogTask(48) + `]}`)
			for _, id := range []string{grouped, limited} {
				pcd(t, db, "watch", id)
			}
			g := tasksOf(t, db, grouped)
			if len(g) != 2 || g[0].Error != `killed: its group "lim" is over its memory limit of 40 MiB` || g[1].State != "succeeded" {
				t.Errorf("in the group: %+v", g)
			}
			if l := tasksOf(t, db, limited); len(l) != 1 || l[0].Error != "killed: over its memory limit of 24 MiB" {
				t.Errorf("with the job's limit: %+v", l)
			}
			stopDaemon(t, d)
			if left := cgroupsNamed(t, fmt.Sprintf("pcd-%d", d.cmd.Process.Pid)); len(left) > 0 {
				t.Errorf("the daemon's cgroups outlived it: %v", left)
			}
		})
	}
}
