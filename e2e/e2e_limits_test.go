package e2e_test

// End-to-end tests of the bounds on resources.

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Commands that only read never take the write lock: they work while
// another process holds it (a big submit, say), instead of exiting 75.
func TestReadersDoNotNeedTheWriteLock(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	r := pcd(t, db, "run", "--sleep", "2")
	if r.code != 0 {
		t.Fatal(r.stderr)
	}
	id := queryString(t, db, "SELECT uuid FROM jobs")
	task := queryString(t, db, "SELECT uuid FROM tasks LIMIT 1")
	otherConn(t, db, "BEGIN IMMEDIATE")
	for _, args := range [][]string{
		{"jobs"}, {"status", id}, {"tasks", id}, {"callbacks", id}, {"watch", id}, {"logs", task},
	} {
		r := pcd(t, db, append([]string{"--busy-timeout", "300ms"}, args...)...)
		if r.code != 0 {
			t.Errorf("pcd %v while another process holds the write lock: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
	// A writer still waits for the lock, then says so.
	if r := pcd(t, db, "--busy-timeout", "300ms", "cancel", id); r.code != 75 && r.code != 7 {
		t.Errorf("cancel under the lock: exit %d: %s", r.code, r.stderr)
	}
}

// A read-only command on a database that needs migrating says so and
// changes nothing; a writer migrates it.
func TestReaderDoesNotMigrate(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	if r := pcd(t, db, "run", "--sleep", "1"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	latest := queryDB(t, db, "SELECT max(version) FROM schema_migrations")
	// Pretend the file is one version older (its schema is a superset).
	raw, err := sql.Open("sqlite", rawDSN(db))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec("DELETE FROM schema_migrations WHERE version = ?", latest); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	before := fileSum(t, db)
	r := pcd(t, db, "jobs")
	if r.code != 3 || !strings.Contains(r.stderr, "needs migrating") {
		t.Errorf("jobs on an older schema: exit %d, stderr %q; want 3 saying it needs migrating", r.code, r.stderr)
	}
	if fileSum(t, db) != before {
		t.Error("a read-only command changed the database")
	}
}

// A reader that holds a snapshot open makes the WAL grow; the daemon says
// so once, and once the reader lets go the WAL is emptied while the
// daemon goes on running.
func TestWALShrinksAfterALongReader(t *testing.T) {
	usePlainBinary(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	job := writeJob(t, dir, "big.json", 25_000, `{"kind":"noop"}`)
	id := strings.TrimSpace(pcd(t, db, "submit", job).stdout)
	ctx := context.Background()
	reader := otherConn(t, db, "BEGIN")
	var n int
	if err := reader.QueryRowContext(ctx, "SELECT count(*) FROM tasks").Scan(&n); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, db, "--wal-warn", "4")
	defer stopDaemon(t, d)
	if w := pcd(t, db, "watch", id); w.code != 0 {
		t.Fatalf("watch: exit %d: %s", w.code, w.stderr)
	}
	wal := func() int64 {
		fi, err := os.Stat(db + "-wal")
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	grown := wal()
	if grown < 4<<20 {
		t.Fatalf("the WAL is %d bytes behind the reader: the test held nothing back", grown)
	}
	waitLog(t, d, "a reader keeps the WAL from being checkpointed")
	if _, err := reader.ExecContext(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for wal() > 1<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("the WAL is still %d bytes 30 s after the reader let go (it was %d)", wal(), grown)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if c := strings.Count(d.stderr.String(), "a reader keeps the WAL"); c != 1 {
		t.Errorf("the warning was logged %d times, want once", c)
	}
	t.Logf("WAL %d MiB behind the reader, %d bytes after it let go", grown>>20, wal())
}

// A payload over --max-payload is refused with exit 2 naming its line or
// task, nothing is written, and a 100 MB line is never held whole.
func TestOversizedPayloadIsRefused(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	pcd(t, db, "submit", "--sleep", "1") // the database exists
	before := fileSum(t, db)

	// 100 MB on one NDJSON line, through a pipe.
	sub, w := startPiped(t, db)
	go func() {
		defer w.Close()
		w.WriteString(`{"kind":"exec","payload":{"argv":["echo","`)
		chunk := strings.Repeat("x", 1<<20)
		for range 100 {
			if _, err := w.WriteString(chunk); err != nil {
				return
			}
		}
		w.WriteString(`"]}}` + "\n")
	}()
	if code := sub.wait(t, time.Minute); code != 2 || !strings.Contains(sub.stderr.String(), "line 1") {
		t.Errorf("a 100 MB line: exit %d, stderr %q; want 2 naming line 1", code, sub.stderr)
	}
	// Holding the line cost 885 MiB. (A peak under the test process's,
	// which the whole suite can take to 700 MiB, is not told, and is 0.)
	rss := maxRSSMiB(sub.cmd.ProcessState)
	if rss > 300 {
		t.Errorf("the submitter's peak RSS was %.0f MiB for a 100 MB line: it held the line", rss)
	}
	t.Logf("submitter peak RSS with a 100 MB line: %.1f MiB", rss)

	// A job file whose second task's payload is 2 MiB.
	file := filepath.Join(dir, "big.json")
	os.WriteFile(file, []byte(`{"tasks": [{"kind": "noop"}, {"kind": "exec", "payload": {"argv": ["echo", "`+
		strings.Repeat("y", 2<<20)+`"]}}]}`), 0o600)
	if r := pcd(t, db, "submit", file); r.code != 2 || !strings.Contains(r.stderr, "task 2") {
		t.Errorf("a 2 MiB payload in a job file: exit %d, stderr %q; want 2 naming task 2", r.code, r.stderr)
	}
	// The limit is a flag.
	if r := pcd(t, db, "submit", "--max-payload", "100", "--", "echo", strings.Repeat("z", 200)); r.code != 2 || !strings.Contains(r.stderr, "over 100") {
		t.Errorf("--max-payload 100: exit %d, stderr %q", r.code, r.stderr)
	}
	if fileSum(t, db) != before {
		t.Error("a refused payload changed the database")
	}
}

// maxRSSMiB is the peak RSS of a process the test waited for. Linux
// starts a vforked child's peak at its parent's (exec records the shared
// memory's high-water mark), so a child's own peak shows only above the
// test process's: below it, this is 0.
func maxRSSMiB(ps *os.ProcessState) float64 {
	ru, ok := ps.SysUsage().(*syscall.Rusage)
	var self syscall.Rusage
	if !ok || syscall.Getrusage(syscall.RUSAGE_SELF, &self) != nil || ru.Maxrss <= self.Maxrss {
		return 0
	}
	return float64(ru.Maxrss) / 1024
}

// leftRows counts the rows any table still holds for job.
func leftRows(t *testing.T, db, job string) int {
	t.Helper()
	return queryDB(t, db, `SELECT
		(SELECT count(*) FROM tasks WHERE job_id = j.id) + (SELECT count(*) FROM results WHERE job_id = j.id) +
		(SELECT count(*) FROM callbacks WHERE job_id = j.id) + (SELECT count(*) FROM attempts WHERE job_id = j.id) +
		(SELECT count(*) FROM deliveries d JOIN callbacks c ON c.id = d.callback_id WHERE c.job_id = j.id) + 1
		FROM jobs j WHERE j.uuid = '`+job+`' UNION ALL SELECT 0 LIMIT 1`)
}

// pcd prune removes finished jobs and gives the space back, keeps a job
// whose webhook has not received its callbacks, and --force removes it.
func TestPruneKeepsUndeliveredCallbacks(t *testing.T) {
	usePlainBinary(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	big := writeJob(t, dir, "big.json", 10_000, `{"kind":"noop"}`)
	if r := pcd(t, db, "run", "--quiet", big); r.code != 0 {
		t.Fatal(r.stderr)
	}
	bigID := queryString(t, db, "SELECT uuid FROM jobs")
	// A job whose webhook is down: its callbacks are not delivered.
	if r := pcd(t, db, "run", "--webhook", "http://127.0.0.1:1/hook", "--delivery-wait", "100ms", "--sleep", "2"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	hooked := queryString(t, db, "SELECT uuid FROM jobs ORDER BY id DESC LIMIT 1")
	before, _ := os.Stat(db)
	r := pcd(t, db, "prune", "--older-than", "0s", "--json")
	if r.code != 0 || !strings.Contains(r.stdout, `"jobs": 1`) || !strings.Contains(r.stdout, `"kept": 1`) {
		t.Fatalf("prune: exit %d, stdout %s, stderr %s", r.code, r.stdout, r.stderr)
	}
	after, _ := os.Stat(db)
	if after.Size() >= before.Size()/2 {
		t.Errorf("the file went from %d to %d bytes: the space was not given back", before.Size(), after.Size())
	}
	t.Logf("file %d -> %d bytes", before.Size(), after.Size())
	if n := leftRows(t, db, bigID); n != 0 {
		t.Errorf("%d rows of the pruned job are left", n)
	}
	if n := leftRows(t, db, hooked); n == 0 {
		t.Error("the job with undelivered callbacks was pruned")
	}
	if r := pcd(t, db, "prune", "--older-than", "0s", "--force"); r.code != 0 || leftRows(t, db, hooked) != 0 {
		t.Errorf("prune --force: exit %d, %d rows left: %s", r.code, leftRows(t, db, hooked), r.stderr)
	}
	// A job that finished recently is kept.
	if r := pcd(t, db, "run", "--sleep", "1"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	if r := pcd(t, db, "prune", "--older-than", "1h"); r.code != 0 || queryDB(t, db, "SELECT count(*) FROM jobs") != 1 {
		t.Errorf("prune --older-than 1h removed a job that finished just now: %s", r.stdout)
	}
	var integrity string
	queryRow(t, db, "PRAGMA integrity_check", &integrity)
	if integrity != "ok" {
		t.Errorf("integrity_check: %s", integrity)
	}
}

// A prune killed halfway leaves a finished job with fewer rows and a sound
// database; pcd retry refuses the half-pruned job, and the next prune ends
// the work.
func TestKillDuringPrune(t *testing.T) {
	usePlainBinary(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	job := writeJob(t, dir, "big.json", 12_000, `{"kind":"fail","payload":{"error":"no"}}`)
	if r := pcd(t, db, "run", "--quiet", job); r.code != 1 {
		t.Fatal(r.stderr)
	}
	id := queryString(t, db, "SELECT uuid FROM jobs")
	p := startWith(t, db, []string{"PCD_FAILPOINT=prune-after-commit:4"}, "prune", "--older-than", "0s")
	p.wait(t, time.Minute)
	if !killedBySIGKILL(p) {
		t.Fatalf("prune not killed: exit %d: %s", p.cmd.ProcessState.ExitCode(), p.stderr)
	}
	if n := leftRows(t, db, id); n == 0 {
		t.Fatal("the kill came after the prune ended")
	}
	if r := pcd(t, db, "retry", id); r.code != 7 || !strings.Contains(r.stderr, "being pruned") {
		t.Errorf("retry of a half-pruned job: exit %d, stderr %q; want 7", r.code, r.stderr)
	}
	if r := pcd(t, db, "prune", "--older-than", "0s"); r.code != 0 {
		t.Fatalf("prune again: exit %d: %s", r.code, r.stderr)
	}
	if n := leftRows(t, db, id); n != 0 {
		t.Errorf("%d rows left after the second prune", n)
	}
	var integrity string
	queryRow(t, db, "PRAGMA integrity_check", &integrity)
	if integrity != "ok" {
		t.Errorf("integrity_check: %s", integrity)
	}
	if n := queryDB(t, db, "SELECT count(*) FROM callbacks c WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = c.job_id)"); n != 0 {
		t.Errorf("%d callbacks of no job", n)
	}
}

// pcd daemon --retain prunes in the background.
func TestDaemonRetain(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	if r := pcd(t, db, "run", "--sleep", "2"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	d := startDaemon(t, db, "--retain", "1ms")
	waitFor(t, db, "SELECT count(*) = 0 FROM jobs", 1)
	stopDaemon(t, d)
	if !strings.Contains(d.stderr.String(), "pruned finished jobs") {
		t.Errorf("the daemon did not say it pruned:\n%s", d.stderr)
	}
}

// TestErrorsStayOneShortLine: an error that quotes user input (a payload
// under the size limit, a kind name with terminal escapes) is one line,
// escaped, and bounded, whatever the input's size.
func TestErrorsStayOneShortLine(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	big := writeJob(t, dir, "big.json", 1, `{"kind":"noop","payload":{"x":"`+strings.Repeat("a", 500_000)+`"}}`)
	escape := writeJob(t, dir, "escape.json", 1, `{"kind":"\u001b[2Jslep"}`)
	for file, want := range map[string]string{big: "noop: takes no payload, got {", escape: `unknown task kind "\x1b[2Jslep"`} {
		r := pcd(t, db, "submit", file)
		if r.code != 2 {
			t.Errorf("%s: exit %d, want 2: %.200s", filepath.Base(file), r.code, r.stderr)
		}
		line := strings.TrimSuffix(r.stderr, "\n")
		if strings.Contains(line, "\n") || len(line) > 2200 {
			t.Errorf("%s: the error is %d bytes on %d lines, want one short line", filepath.Base(file), len(line), strings.Count(r.stderr, "\n"))
		}
		if strings.ContainsRune(line, 0x1b) || !strings.Contains(line, want) {
			t.Errorf("%s: error %.300q, want it to say %q, escaped", filepath.Base(file), line, want)
		}
	}
}

// TestBigSubmitLetsOthersWrite: while a big job file is written, in chunks,
// other submits get the write lock between chunks (with a busy timeout of
// a few chunks), pcd jobs reads without it, and neither sees the big job
// before its last chunk commits.
func TestBigSubmitLetsOthersWrite(t *testing.T) {
	usePlainBinary(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	// The big submit runs the race-built binary, several times slower
	// than the plain one that the others run: it outlasts them.
	const n = 60_000
	big := writeJob(t, dir, "big.json", n, `{"kind":"noop"}`)
	small := writeJob(t, dir, "small.json", 1, `{"kind":"noop"}`)
	if r := pcd(t, db, "submit", small); r.code != 0 { // the database exists
		t.Fatalf("submit: %s", r.stderr)
	}
	p := startBinary(t, pcdBin, db, nil, nil, "submit", big)
	for queryDB(t, db, "SELECT count(*) FROM jobs WHERE staging = 1") == 0 {
		select {
		case <-p.done:
			t.Fatalf("the big submit ended (exit %d) before a chunk committed: %s", p.cmd.ProcessState.ExitCode(), p.stderr)
		default:
		}
		time.Sleep(5 * time.Millisecond)
	}
	others := 0
	for ; others < 3; others++ {
		if r := pcd(t, db, "--busy-timeout", "3s", "submit", small); r.code != 0 {
			t.Fatalf("a submit during the big one: exit %d: %s", r.code, r.stderr)
		}
		r := pcd(t, db, "jobs", "--json")
		if r.code != 0 {
			t.Fatalf("pcd jobs during the big submit: exit %d: %s", r.code, r.stderr)
		}
		if strings.Contains(r.stdout, `"total": 60000`) || strings.Count(r.stdout, `"job_id"`) != others+2 {
			t.Fatalf("pcd jobs during the big submit shows:\n%s", r.stdout)
		}
	}
	select {
	case <-p.done:
		t.Fatalf("the big submit ended before the others were done: the test proves nothing; make it bigger")
	default:
	}
	if code := p.wait(t, 2*time.Minute); code != 0 {
		t.Fatalf("big submit: exit %d: %s", code, p.stderr)
	}
	if got := queryDB(t, db, "SELECT count(*) FROM tasks"); got != n+others+1 {
		t.Errorf("%d tasks, want %d", got, n+others+1)
	}
}
