package e2e_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/pcd-dev/pcd/internal/pgtest"
)

// startPGDaemon starts pcd daemon on a PostgreSQL database and waits until
// it runs.
func startPGDaemon(t *testing.T, db string, env ...string) *proc {
	t.Helper()
	d := startWith(t, db, env, "daemon", "--log-level", "debug")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(d.stderr.String(), "daemon started") {
		select {
		case <-d.done:
			t.Fatalf("daemon exited %d: %s", d.cmd.ProcessState.ExitCode(), d.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not started after 30s: %s", d.stderr)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return d
}

// Three daemons on one PostgreSQL database run a 6,000-task job and two
// small ones; one is SIGKILLed in the middle. The others take its tasks
// over and finish; every daemon ran some of the big job; a watch that ran
// throughout printed every callback once, each job's callback after its
// tasks; and the crash suite's invariants hold in SQL.
func TestPostgresDaemonsShareAJobAndSurviveAKill(t *testing.T) {
	db := pgtest.URL(t)
	dir := t.TempDir()
	env := []string{"PCD_LEASE=2s"}
	var daemons []*proc
	for range 3 {
		daemons = append(daemons, startPGDaemon(t, db, env...))
	}
	watch := startWith(t, db, env, "watch", "--all", "--follow", "--json")
	// Each task prints the pid of the daemon that runs it (its parent).
	big := writeJob(t, dir, "big.json", 6000, `{"kind":"exec","payload":{"argv":["sh","-c","echo $PCD_RUNNER_PID"]}}`)
	small := writeJob(t, dir, "small.json", 50, `{"kind":"sleep","payload":{"secs":0.01}}`)
	totals := map[string]int64{}
	for _, job := range []struct {
		file string
		n    int64
	}{{big, 6000}, {small, 50}, {small, 50}} {
		r := pcd(t, db, "submit", job.file)
		if r.code != 0 {
			t.Fatalf("submit: %s", r.stderr)
		}
		totals[strings.TrimSpace(r.stdout)] = job.n
	}
	// The kill, once the big job is well under way.
	waitFor(t, db, "SELECT count(*) FROM results", 1500)
	victim := daemons[1]
	victim.cmd.Process.Signal(syscall.SIGKILL)
	victim.wait(t, 10*time.Second)

	deadline := time.Now().Add(5 * time.Minute)
	for queryDB(t, db, "SELECT count(*) FROM jobs WHERE finished_at IS NULL") > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("jobs unfinished after 5 minutes: %d results; daemons:\n%s\n%s",
				queryDB(t, db, "SELECT count(*) FROM results"), daemons[0].stderr, daemons[2].stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitReleased(t, db)
	records := checkInvariants(t, db)
	if want := 6000 + 50 + 50 + 3; records != want {
		t.Errorf("%d callback records, want %d", records, want)
	}
	stopWatch(t, watch, records)
	checkWatch(t, watch.stdout.String(), records)
	checkExactlyOnce(t, parseEvents(t, watch.stdout.String()), totals)

	// Every daemon ran some of the big job, the killed one included.
	raw := openRaw(t, db)
	defer raw.Close()
	rows, err := raw.Query(`SELECT convert_from(result, 'UTF8')::json->>'stdout', count(*) FROM results
		WHERE job_id = (SELECT min(id) FROM jobs) GROUP BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	ran := map[int]int{}
	for rows.Next() {
		var out string
		var n int
		if err := rows.Scan(&out, &n); err != nil {
			t.Fatal(err)
		}
		var pid int
		fmt.Sscan(out, &pid)
		ran[pid] += n
	}
	rows.Close()
	for _, d := range daemons {
		if ran[d.cmd.Process.Pid] == 0 {
			t.Errorf("daemon %d ran none of the big job's tasks (by daemon: %v)", d.cmd.Process.Pid, ran)
		}
	}
	t.Logf("tasks of the big job by daemon: %v", ran)

	// pcd status lists the daemons: the killed one as gone.
	st := pcd(t, db, "status", "--json")
	var overview struct {
		Runners []struct {
			PID   int  `json:"pid"`
			Alive bool `json:"alive"`
		} `json:"runners"`
	}
	if err := json.Unmarshal([]byte(st.stdout), &overview); err != nil {
		t.Fatalf("pcd status --json: %v: %s %s", err, st.stdout, st.stderr)
	}
	alive := map[int]bool{}
	for _, r := range overview.Runners {
		alive[r.PID] = r.Alive
	}
	for i, d := range daemons {
		want := i != 1
		if got, ok := alive[d.cmd.Process.Pid]; !ok || got != want {
			t.Errorf("pcd status: daemon %d listed %v, alive %v; want alive %v:\n%s", d.cmd.Process.Pid, ok, got, want, st.stdout)
		}
	}
	for _, d := range []*proc{daemons[0], daemons[2]} {
		stopDaemon(t, d)
	}
	if os.Getenv("PCD_TEST_KEEP") != "" {
		t.Logf("database: %s (%s)", db, filepath.Base(dir))
	}
}

// The everyday commands on PostgreSQL, as on SQLite: submit, watch,
// cancel, retry, tasks, logs, callbacks, jobs, status, prune, and pcd
// run; with the same exit codes.
func TestPostgresCommands(t *testing.T) {
	db := pgtest.URL(t)
	if r := pcd(t, db, "run", "--sleep", "2"); r.code != 0 || !strings.Contains(r.stdout, "completed") {
		t.Fatalf("pcd run: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	d := startPGDaemon(t, db)
	defer stopDaemon(t, d)

	slow := strings.TrimSpace(pcd(t, db, "submit", "--workers", "1", "--sleep", "30").stdout)
	if r := pcd(t, db, "cancel", slow); r.code != 0 || !strings.Contains(r.stdout, "cancelled") {
		t.Fatalf("cancel: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	if r := pcd(t, db, "cancel", slow); r.code == 0 {
		t.Errorf("a second cancel exited 0: %s", r.stdout)
	}
	if r := pcd(t, db, "retry", slow); r.code != 0 {
		t.Fatalf("retry: exit %d: %s", r.code, r.stderr)
	}
	pcd(t, db, "cancel", slow)

	file := filepath.Join(t.TempDir(), "lines")
	if err := os.WriteFile(file, []byte("echo out1\nfalse\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(pcd(t, db, "submit", "--lines", file).stdout)
	if r := pcd(t, db, "watch", id); r.code != 1 {
		t.Errorf("watch of a job with a failed task: exit %d, want 1: %s", r.code, r.stderr)
	}
	tasks := pcd(t, db, "tasks", "--json", id)
	var first struct {
		ID    string `json:"task_id"`
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(strings.SplitN(tasks.stdout, "\n", 2)[0]), &first); err != nil || first.State != "succeeded" {
		t.Fatalf("tasks --json: %v: %s", err, tasks.stdout)
	}
	if r := pcd(t, db, "logs", first.ID); strings.TrimSpace(r.stdout) != "out1" {
		t.Errorf("logs: %q, want out1 (%s)", r.stdout, r.stderr)
	}
	if r := pcd(t, db, "callbacks", id); r.code != 0 || strings.Count(r.stdout, "runner") != 3 {
		t.Errorf("callbacks: exit %d:\n%s", r.code, r.stdout)
	}
	if r := pcd(t, db, "jobs"); r.code != 0 || strings.Count(r.stdout, "\n") != 4 {
		t.Errorf("jobs: exit %d, want a header and 3 jobs:\n%s", r.code, r.stdout)
	}
	if r := pcd(t, db, "status", id); r.code != 0 || !strings.Contains(r.stdout, "1 failed") {
		t.Errorf("status: exit %d:\n%s", r.code, r.stdout)
	}
	if r := pcd(t, db, "status", "nonsense"); r.code == 0 {
		t.Errorf("status of no such job exited 0")
	}
	// The daemon releases (logs) a job's callbacks just after they
	// commit, which is after watch has seen them: until it has, prune
	// keeps the job for that sink.
	for deadline := time.Now().Add(10 * time.Second); queryDB(t, db, "SELECT count(*) FROM releases WHERE committed_id > released_id") > 0; {
		if time.Now().After(deadline) {
			t.Fatal("the daemon did not release its callbacks in 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r := pcd(t, db, "prune", "--older-than", "0s"); r.code != 0 || !strings.Contains(r.stdout, "pruned 3 jobs") {
		t.Errorf("prune: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	if n := queryDB(t, db, "SELECT count(*) FROM tasks"); n != 0 {
		t.Errorf("%d tasks left after pruning every job", n)
	}
}

// The crash suite's random kills on PostgreSQL: three daemons run the
// random-kill load while the test SIGKILLs one at random moments, at least
// 30 times, restarting it each time, and crashes the PostgreSQL server
// itself once (an immediate stop, then a start that recovers from its
// WAL), on a cluster of the test's own. At the end every invariant holds,
// a watch that ran throughout printed each callback once, and no task ran
// twice at the same moment.
func TestPostgresRandomKills(t *testing.T) {
	usePlainBinary(t)
	cluster := pgtest.NewCluster(t)
	db := cluster.URL
	dir := t.TempDir()
	env := []string{"PCD_LEASE=2s"}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	load := &killLoad{dir: dir, rng: rng}
	load.submit(t, db)
	daemons := make([]*proc, 3)
	for i := range daemons {
		daemons[i] = startPGDaemon(t, db, env...)
	}
	watch := startWith(t, db, env, "watch", "--all", "--follow", "--json")
	unfinished := "SELECT count(*) FROM jobs WHERE finished_at IS NULL"
	kills, crashAt := 0, 10+rng.IntN(10)
	// killed are the daemons killed, and those that lost their lease
	// (through the server's crash): either interrupted its tasks.
	killed := map[int]bool{}
	checkRunsNow := func() { checkRunsOf(t, db, dir, daemons, killed) }
	var survivors []*proc // daemons that ran through the server's crash
	started := time.Now()
	for kills < 30 {
		time.Sleep(time.Duration(rng.IntN(600)) * time.Millisecond)
		if queryDB(t, db, unfinished) == 0 {
			load.submit(t, db)
		}
		if kills == crashAt && survivors == nil {
			survivors = slices.Clone(daemons[:1])
			if err := cluster.Crash(time.Duration(rng.IntN(500)) * time.Millisecond); err != nil {
				t.Fatal(err)
			}
			t.Logf("PostgreSQL crashed and restarted after %d kills", kills)
		}
		i := rng.IntN(len(daemons))
		for survivors != nil && daemons[i] == survivors[0] {
			i = rng.IntN(len(daemons)) // one lives through to the end
		}
		daemons[i].cmd.Process.Kill()
		daemons[i].wait(t, 10*time.Second)
		killed[daemons[i].cmd.Process.Pid] = true
		kills++
		var live []int
		for j, d := range daemons {
			if j != i {
				live = append(live, d.cmd.Process.Pid)
			}
		}
		noLeftoversAfterKill(t, db, kills, live...)
		if n := queryDB(t, db, frontierPassesUnfinished); n != 0 {
			t.Fatalf("after kill %d: %d jobs say every task up to done_through is final, and one is not", kills, n)
		}
		checkRunsNow()
		if rng.IntN(4) == 0 {
			// Sometimes killed again during start-up and recovery.
			daemons[i] = startWith(t, db, env, "daemon", "--log-level", "debug")
		} else {
			daemons[i] = startPGDaemon(t, db, env...)
		}
	}
	records, _ := finishLoad(t, db, dir, load, watch, daemons, 3*time.Minute)
	checkRunsNow()
	var pids []int
	for _, d := range daemons {
		pids = append(pids, d.cmd.Process.Pid)
	}
	if left := leftovers(db, pids...); len(left) > 0 {
		t.Errorf("processes of tasks outlived their runner: %v", left)
	}
	// The daemon that lived through the server's crash said so, and
	// that it went on.
	if d := survivors[0]; d != nil {
		log := d.stderr.String()
		// Either it noticed the outage (once), or, down for longer than
		// two thirds of its lease, it lost its lease and rejoined.
		n := strings.Count(log, "lost the connection to the database server")
		told := n == 1 && strings.Contains(log, "resumed")
		rejoined := strings.Contains(log, "lost the lease") && strings.Contains(log, "rejoined")
		if n > 1 || !(told || rejoined) {
			t.Errorf("daemon %d lived through the server's crash and said so %d times; want once, then that it resumed, or that it rejoined:\n%s",
				d.cmd.Process.Pid, n, log)
		}
		if os.Getenv("PCD_TEST_LOG") != "" {
			t.Logf("daemon %d:\n%s", d.cmd.Process.Pid, log)
		}
	}
	interrupted := queryDB(t, db, "SELECT count(*) FROM tasks WHERE interrupts > 0")
	failedOut := queryDB(t, db, "SELECT count(*) FROM results WHERE error LIKE 'interrupted by%'")
	// A command fails only if its task was interrupted three times, or
	// ran twice at once (flock); none may be killed under a live runner.
	if n := queryDB(t, db, `SELECT count(*) FROM results r JOIN tasks t ON t.job_id = r.job_id AND t.seq = r.seq
		WHERE t.kind = 'exec' AND t.max_attempts = 1 AND r.state = 'failed' AND r.error NOT LIKE 'interrupted by%'`); n > 0 {
		t.Errorf("%d commands failed under a live runner (killed by another's look for leftovers?)", n)
	}
	t.Logf("kills %d, jobs %d, tasks %d, callbacks %d, tasks interrupted %d, failed after 3 interruptions %d, in %v",
		kills, load.jobs, load.tasks, records, interrupted, failedOut, time.Since(started).Round(time.Second))
}

// waitReleased waits until the callbacks that dead runners committed and
// never released are released by the survivors, at their next look for
// gone runners (every few seconds).
func waitReleased(t *testing.T, db string) {
	t.Helper()
	unreleased := `SELECT count(*) FROM callbacks c LEFT JOIN releases r ON r.job_id = c.job_id AND r.runner_id = c.runner_id
		WHERE c.id > coalesce(r.released_id, 0)`
	for deadline := time.Now().Add(30 * time.Second); queryDB(t, db, unreleased) > 0 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
}

// A network cut between one daemon and the server, longer than the lease:
// that daemon stops its tasks before its lease runs out; the other takes
// them over and finishes the job; no command runs twice at once, and
// every result and callback is recorded once. When the network heals the
// cut-off daemon rejoins as a new runner and runs tasks again.
func TestPostgresNetworkCut(t *testing.T) {
	db := pgtest.URL(t)
	proxy := pgtest.NewProxy(t, db)
	dir := t.TempDir()
	const lease = 2 * time.Second
	env := []string{"PCD_LEASE=" + lease.String()}
	a := startPGDaemon(t, db, env...)
	b := startPGDaemon(t, proxy.URL, env...)
	watch := startWith(t, db, env, "watch", "--all", "--follow", "--json")

	// Each command prints its daemon's pid, then holds a lock of its own
	// for 0.2-0.6 s: a second copy running at the same time leaves a mark.
	job := func(name string, n int) string {
		var tasks []string
		for i := range n {
			script := "echo $PCD_RUNNER_PID; " + doubleRunScript(dir)
			tasks = append(tasks, fmt.Sprintf(`{"kind":"exec","payload":{"argv":["sh","-c",%q,"sh","%s%d"]}}`, script, name, i))
		}
		path := filepath.Join(dir, name+".json")
		if err := os.WriteFile(path, []byte(`{"workers":25,"tasks":[`+strings.Join(tasks, ",")+`]}`), 0o600); err != nil {
			t.Fatal(err)
		}
		r := pcd(t, db, "submit", path)
		if r.code != 0 {
			t.Fatalf("submit: %s", r.stderr)
		}
		return strings.TrimSpace(r.stdout)
	}
	first := job("first", 600)
	// The cut, once B runs tasks.
	deadline := time.Now().Add(30 * time.Second)
	for len(leftovers(proxy.URL)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("daemon B runs no task after 30s:\n%s", b.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	proxy.Cut()
	cut := time.Now()
	for len(leftovers(proxy.URL)) > 0 {
		if time.Since(cut) > lease+time.Second {
			t.Fatalf("daemon B's commands still run %v after the cut (lease %v): %v\n%s",
				time.Since(cut).Round(time.Millisecond), lease, leftovers(proxy.URL), b.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("daemon B stopped its commands %v after the cut", time.Since(cut).Round(time.Millisecond))
	time.Sleep(3*lease - time.Since(cut))
	proxy.Heal()
	healed := time.Now()

	for !strings.Contains(b.stderr.String(), "rejoined") {
		if time.Since(cut) > 30*time.Second {
			t.Fatalf("daemon B did not rejoin after the cut healed:\n%s", b.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	second := job("second", 300)
	for queryDB(t, db, "SELECT count(*) FROM jobs WHERE finished_at IS NULL") > 0 {
		if time.Since(cut) > 3*time.Minute {
			t.Fatalf("jobs unfinished 3 minutes after the cut:\nA:\n%s\nB:\n%s", a.stderr, b.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitReleased(t, db)
	records := checkInvariants(t, db)
	if want := 600 + 300 + 2; records != want {
		t.Errorf("%d callback records, want %d", records, want)
	}
	stopWatch(t, watch, records)
	checkWatch(t, watch.stdout.String(), records)
	checkExactlyOnce(t, parseEvents(t, watch.stdout.String()), map[string]int64{first: 600, second: 300})
	if doubles, _ := filepath.Glob(filepath.Join(dir, "double.*")); len(doubles) > 0 {
		t.Errorf("%d commands ran twice at the same moment: %v", len(doubles), doubles)
	}
	if !strings.Contains(b.stderr.String(), "lost the lease") {
		t.Errorf("daemon B did not say it lost its lease:\n%s", b.stderr)
	}
	// After the cut healed, B ran commands again.
	var fromB int
	raw := openRaw(t, db)
	defer raw.Close()
	if err := raw.QueryRow(`SELECT count(*) FROM results r
		WHERE r.started_at > $1 AND convert_from(r.result, 'UTF8')::json->>'stdout' = $2`,
		healed.UnixNano(), fmt.Sprintf("%d\n", b.cmd.Process.Pid)).Scan(&fromB); err != nil {
		t.Fatal(err)
	}
	if fromB == 0 {
		t.Errorf("daemon B ran no command after the cut healed:\n%s", b.stderr)
	}
	if os.Getenv("PCD_TEST_LOG") != "" {
		t.Logf("A:\n%s\nB:\n%s", a.stderr, b.stderr)
	}
	if n := queryDB(t, db, "SELECT count(*) FROM results WHERE state <> 'succeeded'"); n > 0 {
		var why string
		_ = raw.QueryRow(`SELECT string_agg(DISTINCT coalesce(error, ''), '; ') FROM results WHERE state <> 'succeeded'`).Scan(&why)
		t.Errorf("%d tasks did not succeed: %s", n, why)
	}
	t.Logf("daemon B ran %d commands after the cut healed; interrupted tasks: %d", fromB,
		queryDB(t, db, "SELECT count(*) FROM tasks WHERE interrupts > 0"))
	stopDaemon(t, a)
	stopDaemon(t, b)
}

// With no daemon dying, three daemons sharing a job run each task once:
// a claim never takes a task that another daemon has just finished (its
// snapshot may predate the result), nor one that runs.
func TestPostgresNoTaskRunsTwice(t *testing.T) {
	db := pgtest.URL(t)
	dir := t.TempDir()
	var daemons []*proc
	// A lease of 5 s: this test is about claims. With 2 s, under the
	// race detector on 2 cores, a heartbeat was sometimes late at the
	// job's start (75 commands forked at once): the lease was lost, and
	// commands ran again, as they must after a lost lease.
	for range 3 {
		daemons = append(daemons, startPGDaemon(t, db, "PCD_LEASE=5s"))
	}
	defer func() {
		if t.Failed() || os.Getenv("PCD_TEST_LOG") != "" {
			for _, d := range daemons {
				t.Logf("daemon %d:\n%s", d.cmd.Process.Pid, d.stderr)
			}
		}
	}()
	const n = 600
	tasks := make([]string, n)
	for i := range tasks {
		tasks[i] = fmt.Sprintf(`{"kind":"exec","payload":{"argv":["sh","-c","sleep 0.$(($$ %% 5 + 2)); echo $PCD_RUNNER_PID >> %s/run.%d"]}}`, dir, i)
	}
	path := filepath.Join(dir, "job.json")
	if err := os.WriteFile(path, []byte(`{"workers":25,"tasks":[`+strings.Join(tasks, ",")+`]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(pcd(t, db, "submit", path).stdout)
	if r := pcd(t, db, "watch", id); r.code != 0 {
		t.Fatalf("watch: exit %d: %s", r.code, r.stderr)
	}
	ran, twice := map[string]int{}, 0
	for i := range n {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("run.%d", i)))
		if err != nil {
			t.Fatalf("task %d did not run: %v", i, err)
		}
		lines := strings.Fields(string(b))
		if len(lines) > 1 {
			twice++
		}
		for _, pid := range lines {
			ran[pid]++
		}
	}
	if twice > 0 {
		t.Errorf("%d of %d tasks ran more than once (runs by daemon pid: %v)", twice, n, ran)
	}
	if len(ran) < 2 {
		t.Errorf("the job ran on %d daemons, want several: %v", len(ran), ran)
	}
	t.Logf("runs by daemon pid: %v", ran)
}

// --halt on a job that two daemons share: once one daemon's task fails,
// neither starts another task of the job (the other hears of it at its
// wake-up, a NOTIFY away), and the job ends failed once. With soon, the
// daemon that halted waits for its running tasks before it cancels the
// rest; the other must not go on meanwhile.
func TestPostgresHaltStopsEveryDaemon(t *testing.T) {
	for _, when := range []string{"now", "soon"} {
		t.Run(when, func(t *testing.T) { haltEveryDaemon(t, when) })
	}
}

func haltEveryDaemon(t *testing.T, when string) {
	db := pgtest.URL(t)
	dir := t.TempDir()
	a := startPGDaemon(t, db, "PCD_LEASE=5s")
	b := startPGDaemon(t, db, "PCD_LEASE=5s")
	log := filepath.Join(dir, "log")
	// Each command logs its start (s) with the time and takes 1 s; task
	// 5 fails after 0.1 s, and logs the moment (f) before it exits.
	script := `echo "s {} $(date +%s.%N)" >> ` + log + `; if [ {} = 5 ]; then sleep 0.1; echo "f {} $(date +%s.%N)" >> ` + log + `; exit 1; fi; sleep 1`
	args := []string{"submit", "--halt", when + ",fail=1", "-w", "10", "--shell", "--", script, ":::"}
	for i := 1; i <= 400; i++ {
		args = append(args, fmt.Sprint(i))
	}
	id := strings.TrimSpace(pcd(t, db, args...).stdout)
	if r := pcd(t, db, "watch", id); r.code != 1 {
		t.Fatalf("watch: exit %d, want 1 (the job failed): %s", r.code, r.stderr)
	}
	b2, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	var failedAt float64
	type start struct {
		task string
		at   float64
	}
	var starts []start
	for _, line := range strings.Split(strings.TrimSpace(string(b2)), "\n") {
		var kind, task string
		var at float64
		if _, err := fmt.Sscanf(line, "%s %s %f", &kind, &task, &at); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if kind == "f" {
			failedAt = at
		} else {
			starts = append(starts, start{task, at})
		}
	}
	if failedAt == 0 {
		t.Fatalf("task 5 never failed; %d starts", len(starts))
	}
	// The failing command logs its end a moment before it exits, and the
	// other daemon hears of the halt a NOTIFY later: 0.5 s is room for a
	// loaded machine, where before it went on for over a second.
	var late []string
	for _, s := range starts {
		if s.at > failedAt+0.5 {
			late = append(late, fmt.Sprintf("%s at +%.3fs", s.task, s.at-failedAt))
		}
	}
	if len(late) > 0 {
		t.Errorf("%d tasks started after the halt: %v\nA:\n%s\nB:\n%s", len(late), late, a.stderr, b.stderr)
	}
	if n := queryDB(t, db, "SELECT count(*) FROM jobs WHERE state = 'failed' AND finished_at IS NOT NULL"); n != 1 {
		t.Errorf("the job did not end failed")
	}
	for _, d := range []*proc{a, b} {
		// The results of a halted job's stopped tasks are not a lost lease.
		if strings.Contains(d.stderr.String(), "lost its lease") || strings.Contains(d.stderr.String(), "lost the lease") {
			t.Errorf("a daemon speaks of a lost lease after a halt:\n%s", d.stderr)
		}
	}
	t.Logf("%d of 400 tasks started; the last %.3fs after the failure", len(starts), func() float64 {
		last := 0.0
		for _, s := range starts {
			last = max(last, s.at-failedAt)
		}
		return last
	}())
	stopDaemon(t, a)
	stopDaemon(t, b)
}

// A frozen daemon's commands do not run beside their reruns on another
// machine. Daemons A and B each run in a PID and UTS namespace of their
// own (two "hosts": neither sees the other's processes, so B's look for
// leftovers cannot kill A's commands). A is SIGSTOPped while its 20
// commands run, each under a lock of its own. B takes the tasks over once
// A's lease has run out, and runs them again; A's fence killed A's copies
// before that, so no rerun finds its lock taken.
func TestPostgresFrozenDaemonIsFenced(t *testing.T) {
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare is not installed")
	}
	db := pgtest.URL(t)
	dir := t.TempDir()
	const lease = 3 * time.Second
	a := startOnHost(t, db, "host-a", "PCD_LEASE="+lease.String())
	var tasks []string
	for i := range 20 {
		// A's copies take 20 s, longer than the takeover; B's 1 s.
		script := `t=1; [ "$(hostname)" != host-a ] || t=20; flock -n -E 99 "` + dir + `/lock.$1" sleep $t; s=$?; [ $s -ne 99 ] || touch "` + dir + `/double.$1"; exit $s`
		tasks = append(tasks, fmt.Sprintf(`{"kind":"exec","payload":{"argv":["sh","-c",%q,"sh","%d"]}}`, script, i))
	}
	path := filepath.Join(dir, "job.json")
	if err := os.WriteFile(path, []byte(`{"workers":25,"tasks":[`+strings.Join(tasks, ",")+`]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(pcd(t, db, "submit", path).stdout)
	for deadline := time.Now().Add(30 * time.Second); queryDB(t, db, "SELECT count(*) FROM running WHERE started_at IS NOT NULL") < 20; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("daemon A does not run the 20 commands:\n%s", a.log.String())
		}
	}
	b := startOnHost(t, db, "host-b", "PCD_LEASE="+lease.String())
	if err := syscall.Kill(a.pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	if r := pcd(t, db, "watch", id); r.code != 0 {
		t.Errorf("watch: exit %d (the job did not succeed):\n%s", r.code, r.stderr)
	}
	t.Logf("daemon B finished the job %v after A froze", time.Since(frozen).Round(time.Millisecond))
	if doubles, _ := filepath.Glob(filepath.Join(dir, "double.*")); len(doubles) > 0 {
		t.Errorf("%d commands ran beside their rerun: %v\nB:\n%s", len(doubles), doubles, b.log.String())
	}
	syscall.Kill(a.pid, syscall.SIGCONT)
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(a.log.String(), "lost the lease"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("daemon A, thawed, did not say it lost its lease:\n%s", a.log.String())
			break
		}
	}
	if n := queryDB(t, db, "SELECT count(*) FROM results WHERE state = 'succeeded'"); n != 20 {
		t.Errorf("%d tasks succeeded, want 20", n)
	}
}

// hostDaemon is pcd daemon in PID and UTS namespaces of its own.
type hostDaemon struct {
	pid int // pcd's, as this process sees it
	log *buffer
}

// startOnHost starts pcd daemon on db as if on another machine named
// host: in PID and UTS namespaces of its own (unshare), and waits until it
// runs; the test kills it at its end.
func startOnHost(t *testing.T, db, host string, env ...string) hostDaemon {
	t.Helper()
	cmd := exec.Command("unshare", "--pid", "--uts", "--fork", "--mount-proc", "sh", "-c", `hostname "$1" && exec "$0" daemon --log-level debug`, pcdBin, host)
	cmd.Env = append(append(os.Environ(), "PCD_DB="+db, raceEnv), env...)
	d := hostDaemon{log: new(buffer)}
	cmd.Stderr = d.log
	if err := cmd.Start(); err != nil {
		t.Skipf("unshare: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		if d.pid > 0 {
			syscall.Kill(d.pid, syscall.SIGCONT)
			syscall.Kill(d.pid, syscall.SIGKILL)
		}
		cmd.Process.Kill()
		<-done
	})
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(d.log.String(), "daemon started"); time.Sleep(10 * time.Millisecond) {
		select {
		case <-done:
			t.Skipf("unshare could not start a daemon on its own host: %s", d.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon on %s did not start:\n%s", host, d.log.String())
		}
	}
	if d.pid = childOf(cmd.Process.Pid); d.pid <= 0 {
		t.Fatalf("no daemon inside unshare on %s", host)
	}
	return d
}

// childOf is the first child of pid, or 0.
func childOf(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(f[0])
	return n
}

// Two daemons see the same failed dependency: one cancels each job that
// waits for it, and neither logs an error for the one it lost the race to.
func TestPostgresDaemonsCancelADependentOnce(t *testing.T) {
	db := pgtest.URL(t)
	// The dependency is paused until both daemons run, so that both look
	// at every dependent when it fails.
	failing := submitID(t, db, "--", "false")
	if r := pcd(t, db, "pause", failing); r.code != 0 {
		t.Fatalf("pause: exit %d: %s", r.code, r.stderr)
	}
	var dependents []string
	for range 30 {
		dependents = append(dependents, submitID(t, db, "--after", failing, "--", "true"))
	}
	a := startPGDaemon(t, db, "PCD_LEASE=5s")
	b := startPGDaemon(t, db, "PCD_LEASE=5s")
	if r := pcd(t, db, "resume", failing); r.code != 0 {
		t.Fatalf("resume: exit %d: %s", r.code, r.stderr)
	}
	for deadline := time.Now().Add(time.Minute); queryDB(t, db, "SELECT count(*) FROM jobs WHERE finished_at IS NULL") > 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("jobs unfinished after a minute:\nA:\n%s\nB:\n%s", a.stderr, b.stderr)
		}
	}
	for _, id := range dependents {
		if why := jobReason(t, db, id); !strings.Contains(why, failing) {
			t.Errorf("job %s: its callback's reason %q does not name the failed dependency", id, why)
		}
	}
	if n := queryDB(t, db, "SELECT count(*) FROM jobs WHERE state = 'cancelled'"); n != len(dependents) {
		t.Errorf("%d jobs cancelled, want %d", n, len(dependents))
	}
	// The cancels' callbacks are released by the runners after the jobs
	// end, a poll later.
	waitReleased(t, db)
	checkInvariants(t, db)
	for name, d := range map[string]*proc{"A": a, "B": b} {
		if strings.Contains(d.stderr.String(), " ERR ") {
			t.Errorf("daemon %s logged an error:\n%s", name, d.stderr)
		}
	}
	stopDaemon(t, a)
	stopDaemon(t, b)
}

// A daemon that takes over a dead daemon's started tasks says so in one
// line: the dead runner's host and pid, how many tasks, and their job. It
// runs them again ahead of the tasks it had queued.
func TestPostgresTakeoverIsLogged(t *testing.T) {
	db := pgtest.URL(t)
	dir := t.TempDir()
	env := []string{"PCD_LEASE=2s"}
	victim := startPGDaemon(t, db, env...)
	s := uniqueSleep(1)
	t.Cleanup(func() { killAll(processesWith("sleep", s)) })
	// More tasks than the victim's first claim (250), so that the
	// survivor has tasks of its own queued when it takes the victim's over.
	job := submitID(t, db, writeJob(t, dir, "sleeps.json", 300, fmt.Sprintf(`{"kind":"exec","payload":{"argv":["sleep","%s"]}}`, s)))
	// The victim has started some (4 workers); the survivor joins, and
	// claims the rest.
	victimPID := victim.cmd.Process.Pid
	started := fmt.Sprintf(`FROM running u JOIN runners g ON g.id = u.runner_id
		WHERE u.started_at IS NOT NULL AND g.pid = %d`, victimPID)
	waitFor(t, db, "SELECT count(*) "+started, 1)
	survivor := startPGDaemon(t, db, env...)
	waitFor(t, db, "SELECT count(*) FROM running u JOIN runners g ON g.id = u.runner_id WHERE u.started_at IS NOT NULL AND g.pid = "+
		strconv.Itoa(survivor.cmd.Process.Pid), 1)
	var takenSeqs string
	queryRow(t, db, "SELECT string_agg(u.seq::text, ',' ORDER BY u.seq) "+started, &takenSeqs)
	n := strings.Count(takenSeqs, ",") + 1
	victim.cmd.Process.Kill()
	killed := time.Now()
	victim.wait(t, 10*time.Second)
	line := regexp.MustCompile(`took over the started tasks of a runner that stopped or died .*host=\S+ pid=` +
		strconv.Itoa(victimPID) + ` tasks=(\d+) jobs=` + job)
	deadline := time.Now().Add(30 * time.Second)
	var m []string
	for m = line.FindStringSubmatch(survivor.stderr.String()); m == nil; m = line.FindStringSubmatch(survivor.stderr.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("no takeover line naming pid %d and job %s after 30s:\n%s", victimPID, job, survivor.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	told := time.Now()
	t.Logf("the takeover was told %v after the kill (lease 2s)", told.Sub(killed).Round(time.Millisecond))
	if got, _ := strconv.Atoi(m[1]); got != n {
		t.Errorf("the takeover line names %d tasks; the dead daemon had started %d (%s)", got, n, takenSeqs)
	}
	if c := strings.Count(survivor.stderr.String(), "took over the started tasks"); c != 1 {
		t.Errorf("the takeover was told %d times, want once:\n%s", c, survivor.stderr)
	}
	after := fmt.Sprintf("seq NOT IN (%s) AND state = 'succeeded' AND started_at > %d", takenSeqs, told.Add(200*time.Millisecond).UnixNano())
	waitFor(t, db, "SELECT count(*) FROM results WHERE seq IN ("+takenSeqs+")", n)
	waitFor(t, db, "SELECT count(*) FROM results WHERE "+after, 1)
	if r := pcd(t, db, "cancel", job); r.code != 0 {
		t.Fatalf("cancel: exit %d: %s", r.code, r.stderr)
	}
	stopDaemon(t, survivor)
	// The taken-over tasks started again before any task that started
	// after the takeover (a moment's grace for the producer's read).
	var lastTaken, firstOther int64
	queryRow(t, db, "SELECT max(started_at) FROM results WHERE seq IN ("+takenSeqs+")", &lastTaken)
	queryRow(t, db, "SELECT coalesce(min(started_at), 0) FROM results WHERE "+after, &firstOther)
	if firstOther != 0 && lastTaken > firstOther {
		t.Errorf("a taken-over task (of %s) started %v after the first other task that started after the takeover",
			takenSeqs, time.Duration(lastTaken-firstOther))
	}
	if firstOther == 0 {
		t.Errorf("no task started after the takeover but the taken-over ones: the test proves nothing")
	}
}

// Two daemons share a job of commands that log their own runs; one is
// SIGKILLed mid-job. Every task whose command ran twice, by that log, is
// marked as one that may have run twice, and the marks that ran once are
// counted: they are the tasks whose start mark committed just before the
// kill, and whose command had not begun.
func TestPostgresTasksThatMayHaveRunTwiceAreMarked(t *testing.T) {
	db := pgtest.URL(t)
	dir := t.TempDir()
	runs := filepath.Join(dir, "runs.log")
	env := []string{"PCD_LEASE=2s"}
	s := uniqueSleep(0)
	t.Cleanup(func() { killAll(processesWith("sleep", s)) })
	victim := startPGDaemon(t, db, env...)
	survivor := startPGDaemon(t, db, env...)
	defer stopDaemon(t, survivor)
	const n = 800
	task := fmt.Sprintf(`{"kind":"exec","payload":{"argv":["sh","-c","echo \"$PCD_TASK_ID\" >> \"$0\"; sleep 0.2%s","%s"]}}`,
		strings.TrimPrefix(s, "0."), runs)
	file := filepath.Join(dir, "job.json")
	if err := os.WriteFile(file, []byte(`{"workers":25,"tasks":[`+strings.TrimSuffix(strings.Repeat(task+",", n), ",")+`]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	job := submitID(t, db, file)
	// Both daemons run tasks, and some have finished; then the victim dies
	// with its workers busy. Its tasks, all as long, run in waves: it is
	// killed once a wave's commands have begun (each has logged its id),
	// not between two waves, nor before they begin.
	started := func(d *proc) string { // the tasks d has started
		return fmt.Sprintf(`FROM running u JOIN runners g ON g.id = u.runner_id
		JOIN tasks t ON t.job_id = u.job_id AND t.seq = u.seq
		WHERE u.started_at IS NOT NULL AND g.pid = %d`, d.cmd.Process.Pid)
	}
	waitFor(t, db, "SELECT count(*) "+started(survivor), 10)
	waitFor(t, db, "SELECT count(*) FROM results", 100)
	waitFor(t, db, "SELECT count(*) "+started(victim), 10)
	wave := strings.Fields(queryString(t, db, "SELECT coalesce(string_agg(t.uuid, ' '), '') "+started(victim)))
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		log, _ := os.ReadFile(runs)
		begun := 0
		for _, id := range wave {
			if strings.Contains(string(log), id) {
				begun++
			}
		}
		if begun == len(wave) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of the victim's %d started commands logged their id within 30 s", begun, len(wave))
		}
	}
	victim.cmd.Process.Kill()
	victim.wait(t, 10*time.Second)
	deadline := time.Now().Add(2 * time.Minute)
	for queryDB(t, db, "SELECT count(*) FROM jobs WHERE finished_at IS NOT NULL") == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the job did not finish within 2 minutes of the kill:\n%s", survivor.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	log, err := os.ReadFile(runs)
	if err != nil {
		t.Fatal(err)
	}
	ran := map[string]int{}
	for _, id := range strings.Fields(string(log)) {
		ran[id]++
	}
	marked := map[string]bool{}
	lines := strings.Split(strings.TrimSpace(pcd(t, db, "tasks", "--json", job).stdout), "\n")
	if len(lines) != n {
		t.Fatalf("pcd tasks --json: %d lines, want %d", len(lines), n)
	}
	for _, line := range lines {
		var task struct {
			ID    string `json:"task_id"`
			State string `json:"state"`
			Twice bool   `json:"may_have_run_twice"`
		}
		if err := json.Unmarshal([]byte(line), &task); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if task.State != "succeeded" || ran[task.ID] == 0 {
			t.Errorf("task %s: %s, ran %d times", task.ID, task.State, ran[task.ID])
		}
		marked[task.ID] = task.Twice
	}
	twice, falseMarks := 0, 0
	for id, times := range ran {
		switch {
		case times > 1 && !marked[id]:
			t.Errorf("task %s ran %d times and is not marked as one that may have run twice", id, times)
		case times > 1:
			twice++
		case marked[id]:
			falseMarks++
		}
	}
	t.Logf("%d tasks ran twice; %d marked tasks ran once", twice, falseMarks)
	if twice == 0 {
		t.Errorf("no task ran twice: the test proves nothing")
	}
	if r := pcd(t, db, "tasks", job); !strings.Contains(r.stdout, "(1 interrupt: may have run twice)") {
		t.Errorf("pcd tasks marks no task:\n%s", r.stdout)
	}
}

// A job of fewer tasks than a runner could claim at once runs on every
// daemon with free workers: a daemon claims for its free workers, not for
// its queue.
func TestPostgresSmallJobSpreads(t *testing.T) {
	db := pgtest.URL(t)
	dir := t.TempDir()
	s := uniqueSleep(30)
	t.Cleanup(func() { killAll(processesWith("sleep", s)) })
	a, b := startPGDaemon(t, db), startPGDaemon(t, db)
	job := filepath.Join(dir, "job.json")
	task := fmt.Sprintf(`{"kind":"exec","payload":{"argv":["sleep","%s"]}}`, s)
	if err := os.WriteFile(job, []byte(`{"workers":25,"tasks":[`+strings.TrimSuffix(strings.Repeat(task+",", 40), ",")+`]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	id := submitID(t, db, job)
	// All 40 start: 25 on one daemon, 15 on the other.
	waitFor(t, db, "SELECT count(*) FROM running WHERE started_at IS NOT NULL", 40)
	perRunner := func(pid int) (claimed, started int) {
		queryRow(t, db, fmt.Sprintf(`SELECT count(*), count(u.started_at) FROM running u JOIN runners g ON g.id = u.runner_id
			WHERE g.pid = %d`, pid), &claimed, &started)
		return claimed, started
	}
	for _, d := range []*proc{a, b} {
		if claimed, started := perRunner(d.cmd.Process.Pid); claimed > 25 || started < 15 {
			t.Errorf("daemon %d: %d tasks claimed, %d started; want at most 25 claimed (its workers) and at least 15 started",
				d.cmd.Process.Pid, claimed, started)
		}
	}
	if r := pcd(t, db, "cancel", id); r.code != 0 {
		t.Fatalf("cancel: exit %d: %s", r.code, r.stderr)
	}
	stopDaemon(t, a)
	stopDaemon(t, b)
}
