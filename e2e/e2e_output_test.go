package e2e_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// gnuParallel is GNU parallel's path; the test skips without it, except
// in CI, which installs it.
func gnuParallel(t *testing.T) string {
	t.Helper()
	gnu, err := exec.LookPath("parallel")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("GNU parallel is not installed (.ci/run installs it): %v", err)
		}
		t.Skip("GNU parallel is not installed")
	}
	return gnu
}

// Every byte a command writes reaches pcd run's stdout, byte for byte as
// GNU parallel -k prints it: long text, binary data, and both at once, in
// task order. The database keeps a tail; the rest comes from the spool.
func TestEveryByteLikeParallel(t *testing.T) {
	gnu := gnuParallel(t)
	dir := t.TempDir()
	big, small := filepath.Join(dir, "big.bin"), filepath.Join(dir, "small.bin")
	for _, f := range []struct {
		path string
		n    int
	}{{big, 3 << 20}, {small, 1000}} {
		b := make([]byte, f.n)
		rand.Read(b)
		if err := os.WriteFile(f.path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name     string
		pcd, gnu []string
	}{
		{"seq 1 1000000", []string{"--", "seq", "1", "{}", ":::", "1000000"}, []string{"seq", "1", ":::", "1000000"}},
		{"several long outputs", []string{"--", "seq", "1", "{}", ":::", "300000", "7", "200000"}, []string{"seq", "1", ":::", "300000", "7", "200000"}},
		{"binary through cat", []string{"--", "cat", "{}", ":::", big, small}, []string{"cat", ":::", big, small}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want, err := exec.Command(gnu, append([]string{"--will-cite", "-k"}, c.gnu...)...).Output()
			if err != nil {
				t.Fatalf("parallel: %v", err)
			}
			db := filepath.Join(t.TempDir(), "pcd.db")
			r := pcd(t, db, append([]string{"run", "--keep-order"}, c.pcd...)...)
			if r.code != 0 {
				t.Fatalf("pcd run: exit %d: %s", r.code, r.stderr)
			}
			if r.stdout != string(want) {
				t.Errorf("pcd printed %d bytes, parallel %d; they differ (stderr: %s)", len(r.stdout), len(want), r.stderr)
			}
			if strings.Contains(r.stderr, "cut") {
				t.Errorf("pcd says output was cut: %s", r.stderr)
			}
		})
	}
}

// In the grouped mode (no --keep-order) each task's output comes whole, a
// task at a time; stderr too. pcd logs prints the whole while the spool
// exists, and pcd prune removes the spool.
func TestGroupedOutputAndLogsAreWhole(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	r := pcd(t, db, "run", "--shell", "--", "seq {} 400000; seq 1 {} >&2", ":::", "1", "2")
	if r.code != 0 {
		t.Fatalf("pcd run: exit %d: %s", r.code, r.stderr)
	}
	one, two := seq(t, 1, 400000), seq(t, 2, 400000)
	if r.stdout != one+two && r.stdout != two+one {
		t.Errorf("grouped stdout: %d bytes, want the two tasks' %d, whole and one after the other", len(r.stdout), len(one)+len(two))
	}
	if e1, e2 := seq(t, 1, 1), seq(t, 1, 2); r.stderr != e1+e2 && r.stderr != e2+e1 {
		t.Errorf("grouped stderr %q, want the tasks' own and nothing else", r.stderr)
	}
	// A line of stderr over the database's tail, and stdout over it too.
	r = pcd(t, db, "run", "--output-cap", "1000", "--shell", "--", "seq 1 100000; seq 1 50000 >&2")
	if r.code != 0 || r.stdout != seq(t, 1, 100000) || r.stderr != seq(t, 1, 50000) {
		t.Fatalf("pcd run --output-cap 1000: exit %d, %d bytes of stdout, %d of stderr; want 0 and both whole", r.code, len(r.stdout), len(r.stderr))
	}
	job := queryString(t, db, "SELECT uuid FROM jobs ORDER BY id DESC LIMIT 1")
	logs := pcd(t, db, "logs", job, "1")
	if logs.code != 0 || logs.stdout != seq(t, 1, 100000) || logs.stderr != seq(t, 1, 50000) {
		t.Errorf("pcd logs: exit %d, %d bytes of stdout, %d of stderr; want both whole", logs.code, len(logs.stdout), len(logs.stderr))
	}
	whole := pcd(t, db, "logs", job) // the job alone: its tasks' output
	if whole.stdout != seq(t, 1, 100000) {
		t.Errorf("pcd logs JOB: %d bytes, want the task's whole output", len(whole.stdout))
	}
	spool := filepath.Join(db+".spool", job)
	if _, err := os.Stat(spool); err != nil {
		t.Fatalf("the job's spool: %v", err)
	}
	if p := pcd(t, db, "prune", "--older-than", "0s"); p.code != 0 {
		t.Fatalf("prune: exit %d: %s", p.code, p.stderr)
	}
	if _, err := os.Stat(spool); !os.IsNotExist(err) {
		t.Errorf("pcd prune left the job's spool: %v", err)
	}
}

// pcd run never cuts output silently: with no spool it can write, it
// prints the tail it has, says so, and exits 1.
func TestCutOutputIsAnError(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	if err := os.Mkdir(db+".spool", 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(db+".spool", 0o777); err != nil { // not private: refused
		t.Fatal(err)
	}
	r := pcd(t, db, "run", "--", "seq", "1", "100000")
	if r.code != 1 {
		t.Errorf("pcd run with its output cut: exit %d, want 1", r.code)
	}
	if !strings.Contains(r.stderr, "stdout was cut to its last 65536 bytes") || !strings.Contains(r.stderr, "could not be printed whole") {
		t.Errorf("stderr does not say the output was cut: %s", r.stderr)
	}
	if len(r.stdout) != 65536 {
		t.Errorf("stdout: %d bytes, want the 65536 kept", len(r.stdout))
	}
}

// A command that writes 1 GiB goes through pcd run without pcd holding
// it: its peak RSS stays within half of that of a run of 1 MiB, room for
// the spread of the race detector's own memory.
func TestHugeOutputIsNotHeldInMemory(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	run := func(size int64) int64 {
		t.Helper()
		cmd := exec.Command(pcdBin, "run", "--", "head", "-c", strconv.FormatInt(size, 10), "/dev/zero")
		cmd.Env = append(os.Environ(), "PCD_DB="+db, raceEnv)
		var n countWriter
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &n, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("pcd run: %v: %s", err, stderr.String())
		}
		if int64(n) != size {
			t.Errorf("stdout: %d bytes, want %d", n, size)
		}
		return cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10
	}
	small := run(1 << 20)
	huge := run(1 << 30)
	t.Logf("peak RSS %d MiB for 1 GiB of output, %d MiB for 1 MiB", huge>>20, small>>20)
	if huge > small+512<<20 {
		t.Errorf("pcd run's peak RSS %d MiB for 1 GiB of output, %d MiB for 1 MiB: it held the output", huge>>20, small>>20)
	}
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) {
	*c += countWriter(len(p))
	return len(p), nil
}

// seq is what seq(1) prints from first to last.
func seq(t *testing.T, first, last int) string {
	t.Helper()
	out, err := exec.Command("seq", strconv.Itoa(first), strconv.Itoa(last)).Output()
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// pcd run | head -2: the closed pipe stops the run as Ctrl-C does. pcd
// exits 141, as a command killed by SIGPIPE would, and the job is paused:
// no daemon runs the rest until the user resumes it.
func TestClosedOutputPausesTheJob(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	cmd := exec.Command(pcdBin, append([]string{"run", "-w", "3", "--shell", "--", "sleep 0.1; echo {}", ":::"}, strings.Fields(seq(t, 1, 50))...)...)
	cmd.Env = append(os.Environ(), "PCD_DB="+db, raceEnv)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewReader(stdout)
	for range 2 {
		if _, err := lines.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	stdout.Close() // head exits
	cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 141 {
		t.Fatalf("exit %d, want 141: %s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "it is paused") {
		t.Errorf("stderr does not say the job is paused: %s", stderr.String())
	}
	if done := queryDB(t, db, "SELECT count(*) FROM results"); done >= 50 {
		t.Fatalf("all %d tasks ran: the closed pipe stopped nothing", done)
	}
	daemonLeavesPaused(t, db)
	// The user resumes it: pcd run --resume runs the rest.
	r := pcd(t, db, "run", "--resume", queryString(t, db, "SELECT uuid FROM jobs ORDER BY id LIMIT 1"))
	if r.code != 0 || queryDB(t, db, "SELECT count(*) FROM results") < 50 {
		t.Errorf("run --resume: exit %d: %s", r.code, r.stderr)
	}
}
