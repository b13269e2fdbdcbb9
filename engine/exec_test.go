package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pcd-dev/pcd/engine/process"
)

func runExec(t *testing.T, e Exec, payload string) (ExecResult, error) {
	t.Helper()
	out, err := e.Run(context.Background(), Task{Payload: json.RawMessage(payload)})
	var res ExecResult
	if out != nil {
		if jerr := json.Unmarshal(out, &res); jerr != nil {
			t.Fatalf("result %s: %v", out, jerr)
		}
	}
	return res, err
}

func TestExecExitCodeAndOutput(t *testing.T) {
	res, err := runExec(t, Exec{}, `{"shell": "echo out; echo err >&2; exit 3"}`)
	if err == nil || err.Error() != "exit status 3" {
		t.Fatalf("error %v, want exit status 3", err)
	}
	if res.ExitCode != 3 || res.Stdout != "out\n" || res.Stderr != "err\n" || res.StdoutTruncated {
		t.Errorf("result %+v", res)
	}
	res, err = runExec(t, Exec{}, `{"argv": ["sh", "-c", "cat; echo \"$GREETING\"; pwd"], "stdin": "in\n", "env": {"GREETING": "hi"}, "dir": "/"}`)
	if err != nil || res.ExitCode != 0 || res.Stdout != "in\nhi\n/\n" {
		t.Errorf("argv with stdin, env and dir: %v %+v", err, res)
	}
}

func TestExecOutputIsCutToTheLastBytes(t *testing.T) {
	res, err := runExec(t, Exec{OutputCap: 1000}, `{"shell": "i=0; while [ $i -lt 500 ]; do printf '%09d\\n' $i; i=$((i+1)); done"}`)
	if err != nil {
		t.Fatal(err)
	}
	if !res.StdoutTruncated || len(res.Stdout) != 1000 {
		t.Fatalf("kept %d bytes, truncated %v; want the last 1000", len(res.Stdout), res.StdoutTruncated)
	}
	if !strings.HasSuffix(res.Stdout, "000000499\n") || !strings.HasPrefix(res.Stdout, "000000400\n") {
		t.Errorf("kept %q...%q, want lines 400 to 499", res.Stdout[:10], res.Stdout[len(res.Stdout)-10:])
	}
	if res.StderrTruncated {
		t.Error("stderr marked cut")
	}
}

// With a spool directory, a stream longer than the cap, or not text, is
// kept whole in its spool file; the result keeps the tail, and says so.
func TestExecSpoolsWhatTheResultCannotHold(t *testing.T) {
	dir := t.TempDir()
	e := Exec{OutputCap: 1000, SpoolDir: dir}
	const job, task = "0b1e7a4c-0000-4000-8000-000000000001", "0b1e7a4c-0000-4000-8000-000000000002"
	run := func(shell string) ExecResult {
		t.Helper()
		out, err := e.Run(context.Background(), Task{JobID: job, ID: task, Payload: json.RawMessage(`{"shell": "` + shell + `"}`)})
		if err != nil {
			t.Fatalf("%s: %v", shell, err)
		}
		var res ExecResult
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatal(err)
		}
		return res
	}
	read := func(stream string) string {
		f, err := OpenSpool(dir, job, task, stream)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b, _ := io.ReadAll(f)
		return string(b)
	}
	res := run("seq 1 5000; seq 1 10 >&2")
	want, _ := exec.Command("seq", "1", "5000").Output()
	if !res.StdoutSpooled || !res.StdoutTruncated || len(res.Stdout) != 1000 || read("stdout") != string(want) {
		t.Errorf("long stdout: spooled %v, truncated %v, %d bytes kept; want spooled whole, the last 1000 kept", res.StdoutSpooled, res.StdoutTruncated, len(res.Stdout))
	}
	if res.StderrSpooled || res.Stderr != "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n" {
		t.Errorf("short stderr: spooled %v, kept %q; want it in the result alone", res.StderrSpooled, res.Stderr)
	}
	if _, err := os.Stat(SpoolPath(dir, job, task, "stderr")); !os.IsNotExist(err) {
		t.Errorf("a short stream has a spool file: %v", err)
	}
	if len(res.Cuts()) != 0 {
		t.Errorf("a spooled stream is called cut: %v", res.Cuts())
	}
	// A few bytes that are not text: spooled, so that they print as they are.
	res = run("printf 'a\\\\377b'")
	if !res.StdoutSpooled || read("stdout") != "a\377b" {
		t.Errorf("binary stdout: spooled %v, file %q", res.StdoutSpooled, read("stdout"))
	}
	// A spool that cannot be written: the tail, and why.
	if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	e.SpoolDir = filepath.Join(dir, "file") // its job directory cannot be made
	res = run("seq 1 5000")
	if res.StdoutSpooled || !res.StdoutTruncated || res.SpoolError == "" || len(res.Cuts()) != 1 {
		t.Errorf("spool that fails: spooled %v, truncated %v, error %q, cuts %v", res.StdoutSpooled, res.StdoutTruncated, res.SpoolError, res.Cuts())
	}
	if !strings.HasSuffix(res.Stdout, "4999\n5000\n") {
		t.Errorf("spool that fails: kept ...%q, want the last bytes", res.Stdout[len(res.Stdout)-12:])
	}
	// Ids that are not pcd's make no path.
	if p := SpoolPath(dir, "../x", task, "stdout"); p != "" {
		t.Errorf("SpoolPath of a job id ../x: %q", p)
	}
}

// gone waits until no process has pid.
func gone(pid int) bool {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return true
		}
		// A zombie still answers kill 0; it is gone once its parent reaps it.
		if stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil && strings.Contains(string(stat), ") Z ") {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

func TestExecTimeoutKillsTheWholeGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "grandchild.pid")
	start := time.Now()
	res, err := runExec(t, Exec{KillGrace: 200 * time.Millisecond},
		`{"shell": "sh -c 'trap \"\" TERM; sleep 300' & echo $! > `+pidFile+`; sleep 300", "timeout": "300ms"}`)
	if err == nil || !strings.Contains(err.Error(), "timed out after 300ms") || !res.TimedOut {
		t.Fatalf("error %v, result %+v; want a timeout", err, res)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %v to kill", took)
	}
	raw, rerr := os.ReadFile(pidFile)
	if rerr != nil {
		t.Fatal(rerr)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	if pid <= 0 || !gone(pid) {
		t.Errorf("grandchild %d (which ignores SIGTERM) is still running", pid)
	}
}

func TestExecCancelKillsAndLeavesNothing(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Exec{}.Run(ctx, Task{Payload: json.RawMessage(`{"shell": "sleep 300 & echo $! > ` + pidFile + `; wait"}`)})
		done <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if b, err := os.ReadFile(pidFile); err == nil && len(b) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("command did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	raw, _ := os.ReadFile(pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	if !gone(pid) {
		t.Errorf("child %d still running after cancel", pid)
	}
}

func TestExecLeavesNoStragglerAfterExit(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "bg.pid")
	_, err := runExec(t, Exec{}, `{"shell": "sleep 300 > /dev/null 2>&1 & echo $! > `+pidFile+`"}`)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	if !gone(pid) {
		t.Errorf("background process %d outlived its task", pid)
	}
}

func TestExecStartFailure(t *testing.T) {
	_, err := runExec(t, Exec{}, `{"argv": ["/nonexistent/tool"]}`)
	if err == nil || !strings.Contains(err.Error(), "start /nonexistent/tool") {
		t.Fatalf("error %v, want a start failure", err)
	}
}

func TestExecValidate(t *testing.T) {
	for payload, want := range map[string]string{
		`{"argv": []}`:                      `"argv" is empty`,
		`{}`:                                `missing "argv" or "shell"`,
		`{"argv": ["no-such-command-pcd"]}`: `command "no-such-command-pcd" not found in PATH`,
		`{"argv": ["true"], "dir": "/no/such/dir"}`: "dir: stat /no/such/dir: no such file or directory",
		`{"argv": ["true"], "shell": "true"}`:       "not both",
		`{"shell": "true", "timeout": "soon"}`:      `not a duration such as "30s": "soon"`,
		`{"shell": "true", "cwd": "/"}`:             `unknown field "cwd"`,
	} {
		err := Exec{}.Validate(json.RawMessage(payload))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", payload, err, want)
		}
	}
	if err := (Exec{}).Validate(json.RawMessage(`{"argv": ["true"], "timeout": 2}`)); err != nil {
		t.Errorf("a good payload: %v", err)
	}
}

// TestExecReportsUsage: the result holds the command's peak memory (when
// it is above the runner's) and CPU time, its children's that it waited
// for included.
func TestExecReportsUsage(t *testing.T) {
	var self syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &self); err != nil {
		t.Fatal(err)
	}
	// A child that holds more than this process has, then a loop that
	// spends CPU time.
	bytes := max(self.Maxrss*1024*2, 40<<20)
	res, err := runExec(t, Exec{}, fmt.Sprintf(`{"shell": "(v=$(head -c %d /dev/zero | tr '\\0' x); echo ${#v}); i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done"}`, bytes))
	if err != nil {
		t.Fatal(err)
	}
	if res.MaxRSSKiB < bytes>>10 {
		t.Errorf("peak memory %d KiB, want at least the child's %d KiB", res.MaxRSSKiB, bytes>>10)
	}
	if res.CPUSecs <= 0 {
		t.Errorf("CPU time %v s, want some", res.CPUSecs)
	}
	t.Logf("peak %d KiB, CPU %.3f s", res.MaxRSSKiB, res.CPUSecs)
}

// TestExecMemoryLimit: a command over its memory limit is killed by the
// kernel, and fails with its limit named; one under it runs as before,
// with its peak from its cgroup. The command is forked from the caller's
// thread here (no runner's namespace), which enters the cgroup for it.
func TestExecMemoryLimit(t *testing.T) {
	if err := CheckLimits(Limits{Memory: 64 << 20}); err != nil {
		t.Skipf("this machine cannot enforce limits: %v", err)
	}
	t.Cleanup(process.RemoveCgroups)
	res, err := runExec(t, Exec{}, `{"shell": "v=$(head -c 100000000 /dev/zero | tr '\\0' x); echo survived", "memory": "24MiB"}`)
	if err == nil || err.Error() != "killed: over its memory limit of 24 MiB" || !res.OOMKilled {
		t.Fatalf("err %v, oom_killed %v: want the limit named", err, res.OOMKilled)
	}
	if strings.Contains(res.Stdout, "survived") {
		t.Errorf("the command went on: %q", res.Stdout)
	}
	res, err = runExec(t, Exec{}, `{"shell": "v=$(head -c 4000000 /dev/zero | tr '\\0' x); echo ${#v}", "memory": "64MiB", "cpus": 0.5}`)
	if err != nil || strings.TrimSpace(res.Stdout) != "4000000" || res.OOMKilled {
		t.Fatalf("under its limit: %v, %+v", err, res)
	}
	if res.MaxRSSKiB < 4000 || res.MaxRSSKiB > 64<<10 {
		t.Errorf("peak %d KiB, want between the 4 MB it held and its 64 MiB limit", res.MaxRSSKiB)
	}
}

// TestExecLiveFileIsMadeAtFirstOutput: a running command's live output
// file appears with its first output, not before (a quiet command costs
// no file), holds what it printed while it runs, and is gone after.
func TestExecLiveFileIsMadeAtFirstOutput(t *testing.T) {
	dir := t.TempDir()
	e := Exec{LiveDir: dir}
	run := func(id, shell string) chan error {
		done := make(chan error, 1)
		go func() {
			_, err := e.Run(context.Background(), Task{ID: id, Payload: json.RawMessage(`{"shell": "` + shell + `"}`)})
			done <- err
		}()
		return done
	}
	// The command makes the marker once it has (or has not) printed.
	marker := filepath.Join(dir, "marker")
	quiet := run("quiet", "touch "+marker+"; sleep 0.5")
	for _, err := os.Stat(marker); err != nil; _, err = os.Stat(marker) {
		time.Sleep(5 * time.Millisecond)
	}
	if files := LiveFiles(dir, "quiet"); len(files) != 0 {
		t.Errorf("a command that printed nothing has live files %v", files)
	}
	if err := <-quiet; err != nil {
		t.Fatal(err)
	}
	os.Remove(marker)
	loud := run("loud", "echo hello; touch "+marker+"; sleep 0.5")
	for _, err := os.Stat(marker); err != nil; _, err = os.Stat(marker) {
		time.Sleep(5 * time.Millisecond)
	}
	files := LiveFiles(dir, "loud")
	if len(files) != 1 {
		t.Fatalf("a running command that printed has live files %v, want one", files)
	}
	// The runner copies the pipe to the file as it comes: wait for it.
	deadline := time.Now().Add(10 * time.Second)
	for b, _ := os.ReadFile(files[0]); string(b) != "hello\n"; b, _ = os.ReadFile(files[0]) {
		if time.Now().After(deadline) {
			t.Fatalf("the live file holds %q, want the command's output", b)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := <-loud; err != nil {
		t.Fatal(err)
	}
	if files := LiveFiles(dir, "loud"); len(files) != 0 {
		t.Errorf("live files %v outlived their command", files)
	}
}
