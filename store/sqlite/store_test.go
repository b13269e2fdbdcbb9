package sqlite_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pcd-dev/pcd/migrations"
	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/store/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// openDB opens a fresh database in t.TempDir and closes it with the test.
func openDB(t *testing.T) *sqlite.DB {
	t.Helper()
	return openPath(t, filepath.Join(t.TempDir(), "pcd.db"))
}

func openPath(t *testing.T, path string) *sqlite.DB {
	t.Helper()
	db, err := sqlite.Open(context.Background(), path, sqlite.Options{})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// rawDB opens the file with plain database/sql, to look under the store.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	return raw
}

func queryInt(t *testing.T, db *sql.DB, q string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := db.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func newJob(t *testing.T, db *sqlite.DB, n int) store.Job {
	t.Helper()
	nj := store.NewJob{Name: "t", Workers: 2, QueueSize: 4}
	for range n {
		nj.Tasks = append(nj.Tasks, store.NewTask{Kind: "noop", Payload: []byte("null")})
	}
	job, err := db.CreateJob(context.Background(), nj)
	if err != nil {
		t.Fatalf("create job: %v", err)
	}
	return job
}

func result(seq int64) store.Result {
	now := time.Now()
	return store.Result{Seq: seq, State: store.Succeeded, Attempt: 1, Time: time.Millisecond, StartedAt: now, FinishedAt: now,
		Message: fmt.Appendf(nil, `{"event":"task","number":%d}`, seq)}
}

func TestMigrationsApplyOnceAndReopenIsNoop(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pcd.db")
	db, err := sqlite.Open(context.Background(), path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	raw := rawDB(t, path)
	versions := queryInt(t, raw, "SELECT count(*) FROM schema_migrations")
	if versions == 0 {
		t.Fatal("no migration recorded")
	}
	applied := queryInt(t, raw, "SELECT max(applied_at) FROM schema_migrations")
	for _, table := range []string{"jobs", "tasks", "callbacks"} {
		if queryInt(t, raw, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?", table) != 1 {
			t.Errorf("table %s missing", table)
		}
	}
	raw.Close()
	before := readFile(t, path)

	db, err = sqlite.Open(context.Background(), path, sqlite.Options{})
	if err != nil {
		t.Fatalf("second open: %v", err)
	}
	db.Close()
	raw = rawDB(t, path)
	if got := queryInt(t, raw, "SELECT count(*) FROM schema_migrations"); got != versions {
		t.Errorf("second open recorded %d versions, want %d", got, versions)
	}
	if got := queryInt(t, raw, "SELECT max(applied_at) FROM schema_migrations"); got != applied {
		t.Errorf("second open re-applied a migration")
	}
	raw.Close()
	if !bytes.Equal(before, readFile(t, path)) {
		t.Error("second open changed the database file")
	}
}

func TestFileAndDirectoryModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "pcd")
	path := filepath.Join(dir, "pcd.db")
	openPath(t, path)
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", p, got, want)
		}
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRefusesBadFiles checks that each kind of unusable file gets its own
// error and is left byte-for-byte as it was.
func TestRefusesBadFiles(t *testing.T) {
	cases := []struct {
		name string
		make func(t *testing.T, path string)
		want error
	}{
		{"not sqlite", func(t *testing.T, path string) {
			os.WriteFile(path, []byte("name,age\nada,36\n"), 0o600)
		}, store.ErrNotDatabase},
		{"newer schema", func(t *testing.T, path string) {
			db, err := sqlite.Open(context.Background(), path, sqlite.Options{})
			if err != nil {
				t.Fatal(err)
			}
			db.Close()
			raw := rawDB(t, path)
			if _, err := raw.Exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, '9999_future.sql', 0)"); err != nil {
				t.Fatal(err)
			}
			raw.Close()
		}, store.ErrTooNew},
		{"corrupt", func(t *testing.T, path string) {
			db, err := sqlite.Open(context.Background(), path, sqlite.Options{})
			if err != nil {
				t.Fatal(err)
			}
			newJob(t, db, 2000)
			db.Close()
			scribble(t, path)
		}, store.ErrCorrupt},
		{"another application's database", func(t *testing.T, path string) {
			raw := rawDB(t, path)
			if _, err := raw.Exec("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)"); err != nil {
				t.Fatal(err)
			}
			raw.Close()
		}, store.ErrNotPCD},
	}
	for _, tc := range cases {
		for _, brief := range []bool{false, true} {
			if brief && tc.want == store.ErrCorrupt {
				continue // a brief open checks the schema only
			}
			t.Run(fmt.Sprintf("%s/brief=%v", tc.name, brief), func(t *testing.T) {
				refused(t, tc.make, tc.want, sqlite.Options{Brief: brief})
			})
		}
	}
}

// refused checks that Open with opts refuses the file that make leaves
// with want, in one line, and leaves it unchanged.
func refused(t *testing.T, make func(t *testing.T, path string), want error, opts sqlite.Options) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pcd.db")
	make(t, path)
	before := readFile(t, path)
	db, err := sqlite.Open(context.Background(), path, opts)
	if err == nil {
		db.Close()
		t.Fatal("open succeeded, want an error")
	}
	if !errors.Is(err, want) {
		t.Fatalf("error %q, want %v", err, want)
	}
	if bytes.ContainsRune([]byte(err.Error()), '\n') {
		t.Errorf("error is not one line: %q", err)
	}
	if !bytes.Equal(before, readFile(t, path)) {
		t.Error("the refused file was changed")
	}
}

// A brief open (a short command's) writes a job that a runner's open then
// runs: the runner's statements are prepared when it first needs them.
func TestBriefOpenSubmitsForARunner(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pcd.db")
	openPath(t, path).Close()
	brief, err := sqlite.Open(context.Background(), path, sqlite.Options{Brief: true})
	if err != nil {
		t.Fatal(err)
	}
	job := newJob(t, brief, 3)
	if err := brief.Close(); err != nil {
		t.Fatal(err)
	}
	db := openPath(t, path)
	defer db.Close()
	var results []store.Result
	for seq := int64(1); seq <= 3; seq++ {
		results = append(results, store.Result{Seq: seq, State: store.Succeeded, Attempt: 1, Record: true,
			Message: []byte(`{}`), StartedAt: time.Now(), FinishedAt: time.Now()})
	}
	c, err := db.CompleteTasks(context.Background(), store.Batch{JobID: job.ID, Results: results,
		Finish: func(store.Job) ([]byte, error) { return []byte(`{}`), nil }})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Callbacks) != 3 || c.JobCallback == nil {
		t.Fatalf("%d task callbacks and job callback %v, want 3 and one", len(c.Callbacks), c.JobCallback)
	}
}

// scribble corrupts pages in the middle of the file, past the header.
func scribble(t *testing.T, path string) {
	t.Helper()
	b := readFile(t, path)
	for i := len(b) / 2; i < len(b)/2+8192 && i < len(b); i++ {
		b[i] = 0xA5
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestLargeFileIsCheckedLater: above FullCheckMax, Open checks only the
// small tables, and Check finds what it left.
func TestLargeFileIsCheckedLater(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pcd.db")
	db := openPath(t, path)
	newJob(t, db, 2000)
	if db.CheckDeferred() {
		t.Error("a new file's check was deferred")
	}
	db.Close()
	scribble(t, path)
	db, err := sqlite.Open(context.Background(), path, sqlite.Options{FullCheckMax: 4096})
	if err != nil {
		t.Fatalf("open with the check deferred: %v", err)
	}
	defer db.Close()
	if !db.CheckDeferred() {
		t.Fatal("the check of a file over FullCheckMax was not deferred")
	}
	if err := db.Check(context.Background()); !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("Check: %v, want ErrCorrupt", err)
	}
}

func TestMustExist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing.db")
	_, err := sqlite.Open(context.Background(), path, sqlite.Options{MustExist: true})
	if !errors.Is(err, store.ErrNoDatabase) {
		t.Fatalf("got %v, want ErrNoDatabase", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Error("a file was created")
	}
}

func TestCreateJobWritesEveryTask(t *testing.T) {
	db := openDB(t)
	job := newJob(t, db, 250)
	tasks, err := db.Tasks(context.Background(), job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks) != 250 {
		t.Fatalf("%d tasks, want 250", len(tasks))
	}
	seen := map[string]bool{}
	for i, task := range tasks {
		if task.Seq != int64(i+1) || task.State != store.Pending || seen[task.UUID] {
			t.Fatalf("task %d: seq %d state %s uuid %s (dup %v)", i, task.Seq, task.State, task.UUID, seen[task.UUID])
		}
		seen[task.UUID] = true
	}
}

func TestPendingTasksPagesBySeq(t *testing.T) {
	db := openDB(t)
	job := newJob(t, db, 10)
	ctx := context.Background()
	if _, err := db.CompleteTasks(ctx, store.Batch{JobID: job.ID, Results: []store.Result{result(2), result(3)}}); err != nil {
		t.Fatal(err)
	}
	var got []int64
	var after int64
	for {
		page, err := db.PendingTasks(ctx, job.ID, after, 3, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, p := range page {
			got = append(got, p.Seq)
			after = p.Seq
		}
	}
	want := []int64{1, 4, 5, 6, 7, 8, 9, 10}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("pending %v, want %v", got, want)
	}
}

// TestResultAndCallbackCommitTogether injects a failure between a task's
// result and its callback record: the whole batch must roll back.
func TestResultAndCallbackCommitTogether(t *testing.T) {
	db := openDB(t)
	job := newJob(t, db, 10)
	ctx := context.Background()
	injected := errors.New("injected")
	db.Hooks.BetweenResultAndCallback = func(_, seq int64) error {
		if seq == 6 {
			return injected
		}
		return nil
	}
	var batch []store.Result
	for seq := int64(1); seq <= 10; seq++ {
		batch = append(batch, result(seq))
	}
	if _, err := db.CompleteTasks(ctx, store.Batch{JobID: job.ID, Results: batch}); !errors.Is(err, injected) {
		t.Fatalf("got %v, want the injected error", err)
	}
	raw := rawDB(t, db.Path())
	if n := queryInt(t, raw, "SELECT count(*) FROM results"); n != 0 {
		t.Errorf("%d results committed without their callbacks", n)
	}
	if n := queryInt(t, raw, "SELECT count(*) FROM callbacks"); n != 0 {
		t.Errorf("%d callbacks committed without their results", n)
	}

	db.Hooks.BetweenResultAndCallback = nil
	committed, err := db.CompleteTasks(ctx, store.Batch{JobID: job.ID, Results: batch})
	cbs := committed.Callbacks
	if err != nil {
		t.Fatal(err)
	}
	if len(cbs) != 10 {
		t.Fatalf("%d callbacks, want 10", len(cbs))
	}
	if n := queryInt(t, raw, `SELECT count(*) FROM results r JOIN callbacks c ON c.job_id = r.job_id AND c.task_seq = r.seq
		WHERE r.state = 'succeeded'`); n != 10 {
		t.Errorf("%d tasks have both result and callback, want 10", n)
	}
}

// TestOneResultPerTaskInALargeBatch has the already-final task inside a
// multi-row chunk, which takes the row-by-row path.
func TestOneResultPerTaskInALargeBatch(t *testing.T) {
	db := openDB(t)
	job := newJob(t, db, 300)
	ctx := context.Background()
	if _, err := db.CompleteTasks(ctx, store.Batch{JobID: job.ID, Results: []store.Result{result(17), result(200)}}); err != nil {
		t.Fatal(err)
	}
	var batch []store.Result
	for seq := int64(1); seq <= 300; seq++ {
		r := result(seq)
		r.Error = "second"
		batch = append(batch, r)
	}
	committed, err := db.CompleteTasks(ctx, store.Batch{JobID: job.ID, Results: batch})
	if err != nil {
		t.Fatal(err)
	}
	if len(committed.Callbacks) != 298 {
		t.Fatalf("%d callbacks, want 298", len(committed.Callbacks))
	}
	for _, cb := range committed.Callbacks {
		if cb.TaskSeq == 17 || cb.TaskSeq == 200 {
			t.Errorf("task %d got a second callback", cb.TaskSeq)
		}
	}
	tasks, _ := db.Tasks(ctx, job.ID)
	for _, task := range tasks {
		want := "second"
		if task.Seq == 17 || task.Seq == 200 {
			want = ""
		}
		if task.State != store.Succeeded || task.Error != want {
			t.Errorf("task %d: %s %q, want succeeded %q", task.Seq, task.State, task.Error, want)
		}
	}
	if j, _ := db.Job(ctx, job.ID); j.Succeeded != 300 {
		t.Errorf("job counts %d succeeded, want 300", j.Succeeded)
	}
}

func TestOneResultPerTask(t *testing.T) {
	db := openDB(t)
	job := newJob(t, db, 3)
	ctx := context.Background()
	first, err := db.CompleteTasks(ctx, store.Batch{JobID: job.ID, Results: []store.Result{result(1), result(2)}})
	if err != nil || len(first.Callbacks) != 2 {
		t.Fatalf("first batch: %v, %d callbacks", err, len(first.Callbacks))
	}
	again := result(2)
	again.State, again.Error = store.Failed, "second result"
	committed, err := db.CompleteTasks(ctx, store.Batch{JobID: job.ID, Results: []store.Result{again, result(3)}})
	if err != nil {
		t.Fatal(err)
	}
	if second := committed.Callbacks; len(second) != 1 || second[0].TaskSeq != 3 {
		t.Fatalf("second batch callbacks %+v, want only task 3", second)
	}
	tasks, _ := db.Tasks(ctx, job.ID)
	if tasks[1].State != store.Succeeded || tasks[1].Error != "" || tasks[1].Attempts != 1 {
		t.Errorf("task 2 was recorded twice: %+v", tasks[1])
	}
	j, _ := db.Job(ctx, job.ID)
	if j.Succeeded != 3 || j.Failed != 0 {
		t.Errorf("counts %d succeeded %d failed, want 3 and 0", j.Succeeded, j.Failed)
	}
}

func TestFinishJobOnce(t *testing.T) {
	db := openDB(t)
	job := newJob(t, db, 2)
	ctx := context.Background()
	msg := func(j store.Job) ([]byte, error) { return []byte(`{"event":"job"}`), nil }
	if _, _, err := db.FinishJob(ctx, job.ID, time.Second, store.Span{}, msg); !errors.Is(err, store.ErrNotDone) {
		t.Fatalf("finish with pending tasks: %v, want ErrNotDone", err)
	}
	failed := result(2)
	failed.State = store.Failed
	if _, err := db.CompleteTasks(ctx, store.Batch{JobID: job.ID, Results: []store.Result{result(1), failed}}); err != nil {
		t.Fatal(err)
	}
	done, cb, err := db.FinishJob(ctx, job.ID, 3*time.Second, store.Span{}, msg)
	if err != nil || cb == nil {
		t.Fatalf("finish: %v, callback %v", err, cb)
	}
	if done.State != store.Failed || done.Elapsed != 3*time.Second || !done.Finished() {
		t.Errorf("finished job %+v", done)
	}
	_, cb, err = db.FinishJob(ctx, job.ID, 4*time.Second, store.Span{}, msg)
	if err != nil || cb != nil {
		t.Fatalf("second finish: %v, callback %v; want no new callback", err, cb)
	}
	raw := rawDB(t, db.Path())
	if n := queryInt(t, raw, "SELECT count(*) FROM callbacks WHERE event = 'job'"); n != 1 {
		t.Errorf("%d job callbacks, want 1", n)
	}
	if n := queryInt(t, raw, "SELECT max(id) FROM callbacks WHERE event = 'job'") -
		queryInt(t, raw, "SELECT max(id) FROM callbacks WHERE event = 'task'"); n <= 0 {
		t.Error("job callback is not after the task callbacks")
	}
}

func TestMarkDelivered(t *testing.T) {
	db := openDB(t)
	job := newJob(t, db, 4)
	ctx := context.Background()
	committed, err := db.CompleteTasks(ctx, store.Batch{JobID: job.ID, Results: []store.Result{result(1), result(2), result(3)}})
	if err != nil {
		t.Fatal(err)
	}
	cbs := committed.Callbacks
	// The next batch marks the previous one delivered.
	if _, err := db.CompleteTasks(ctx, store.Batch{JobID: job.ID, Results: []store.Result{result(4)},
		Released: store.Span{From: cbs[0].ID, To: cbs[1].ID}}); err != nil {
		t.Fatal(err)
	}
	undelivered, err := db.Callbacks(ctx, job.ID, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(undelivered) != 2 || undelivered[0].TaskSeq != 3 || undelivered[1].TaskSeq != 4 {
		t.Fatalf("undelivered %+v, want tasks 3 and 4", undelivered)
	}
}

func TestRunnerLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pcd.db")
	lock, err := sqlite.AcquireRunnerLock(path, "test")
	if err != nil {
		t.Fatal(err)
	}
	_, err = sqlite.AcquireRunnerLock(path, "test")
	var le *store.LockedError
	if !errors.As(err, &le) || !errors.Is(err, store.ErrLocked) {
		t.Fatalf("second lock: %v, want a LockedError", err)
	}
	if le.PID != os.Getpid() {
		t.Errorf("lock names pid %d, want %d", le.PID, os.Getpid())
	}
	if err := lock.Release(); err != nil {
		t.Fatal(err)
	}
	again, err := sqlite.AcquireRunnerLock(path, "test")
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	again.Release()
}

// TestMigrationMovesResultsOutOfTasks builds a database at schema version 4,
// as pcd 0.4 left it, and checks what version 5 makes of each kind of task
// and of the runner's delivery marks.
func TestMigrationMovesResultsOutOfTasks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pcd.db")
	raw := rawDB(t, path)
	if _, err := raw.Exec(`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	for v, name := range []string{"0001_init.sql", "0002_recovery.sql", "0003_retries.sql", "0004_delivery.sql"} {
		body, err := fs.ReadFile(migrations.SQLite, name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := raw.Exec(string(body)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := raw.Exec("INSERT INTO schema_migrations VALUES (?, ?, 1)", v+1, name); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{
		`INSERT INTO jobs (id, uuid, state, sealed, workers, queue_size, total, succeeded, failed, created_at)
			VALUES (1, 'j1', 'running', 1, 2, 4, 4, 1, 1, 1)`,
		`INSERT INTO tasks (job_id, seq, uuid, kind, payload, state, attempts, result, error, time_ns, started_at, finished_at) VALUES
			(1, 1, 't1', 'noop', 'null', 'succeeded', 1, '{"ok":true}', NULL, 5, 10, 15),
			(1, 2, 't2', 'noop', 'null', 'failed', 2, NULL, 'boom', 6, 20, 26),
			(1, 3, 't3', 'noop', 'null', 'running', 1, NULL, 'first try failed', NULL, 30, NULL),
			(1, 4, 't4', 'noop', 'null', 'pending', 0, NULL, NULL, NULL, NULL, NULL)`,
		`INSERT INTO callbacks (id, event, job_id, task_seq, message, created_at, attempts, delivered_at) VALUES
			(7, 'task', 1, 1, '{}', 1, 1, 100), (8, 'task', 1, 2, '{}', 1, 0, NULL)`,
	} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	raw.Close()

	db := openPath(t, path)
	ctx := context.Background()
	tasks, err := db.Tasks(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	type view struct {
		state    store.State
		attempts int
		result   string
		err      string
		started  int64
	}
	want := []view{
		{store.Succeeded, 1, `{"ok":true}`, "", 10},
		{store.Failed, 2, "", "boom", 20},
		{store.Running, 1, "", "first try failed", 30},
		{store.Pending, 0, "", "", 0},
	}
	for i, task := range tasks {
		var started int64
		if !task.StartedAt.IsZero() {
			started = task.StartedAt.UnixNano()
		}
		if got := (view{task.State, task.Attempts, string(task.Result), task.Error, started}); got != want[i] {
			t.Errorf("task %d after migrating: %+v, want %+v", task.Seq, got, want[i])
		}
	}
	if ids, err := db.UnreleasedJobs(ctx); err != nil || len(ids) != 1 {
		t.Fatalf("undelivered jobs %v, %v: want job 1", ids, err)
	}
	cbs, err := db.Callbacks(ctx, 1, 0, true)
	if err != nil || len(cbs) != 1 || cbs[0].ID != 8 {
		t.Errorf("undelivered callbacks %+v, %v: want only 8", cbs, err)
	}
	pending, err := db.PendingTasks(ctx, 1, 0, 10, time.Now())
	if err != nil || len(pending) != 2 || pending[0].Seq != 3 || pending[1].Seq != 4 {
		t.Errorf("pending after migrating: %+v, %v: want tasks 3 and 4", pending, err)
	}
}

// TestResultIsStoredOnce: a task callback's message refers to the result
// row instead of copying the result, and every reader gets the message as
// written, before and after a retry deletes the failed results.
func TestResultIsStoredOnce(t *testing.T) {
	db := openDB(t)
	job := newJob(t, db, 4)
	ctx := context.Background()
	big := `{"exit_code":1,"stdout":"` + strings.Repeat("é<x>", 50000) + `"}`
	msgs := map[int64]string{
		// refers to its result
		1: `{"event":"task","kind":"exec","state":"failed","attempts":1,"result":` + big + `,"error":"exit status 1"}`,
		// the result is the last member
		2: `{"event":"task","state":"succeeded","result":{"n":2}}`,
		// the message holds a different encoding of the result: kept whole
		3: `{"event":"task","state":"succeeded","result":{"n": 3}}`,
		// no result
		4: `{"event":"task","kind":"x\",\"result\":{\"n\":4}","state":"succeeded"}`,
	}
	results := map[int64]string{1: big, 2: `{"n":2}`, 3: `{"n":3}`, 4: `{"n":4}`}
	var batch []store.Result
	for seq := int64(1); seq <= 4; seq++ {
		r := result(seq)
		r.Message, r.Result = []byte(msgs[seq]), []byte(results[seq])
		if seq == 1 {
			r.State, r.Error = store.Failed, "exit status 1"
		}
		batch = append(batch, r)
	}
	if _, err := db.CompleteTasks(ctx, store.Batch{JobID: job.ID, Results: batch}); err != nil {
		t.Fatal(err)
	}
	raw := rawDB(t, db.Path())
	if n := queryInt(t, raw, "SELECT length(CAST(message AS BLOB)) FROM callbacks WHERE task_seq = 1"); n > 200 {
		t.Errorf("the callback of task 1 holds %d bytes: its result is copied", n)
	}
	if n := queryInt(t, raw, "SELECT count(*) FROM callbacks WHERE result_at IS NOT NULL"); n != 2 {
		t.Errorf("%d callbacks refer to their results, want 2 (tasks 1 and 2)", n)
	}
	check := func(when string) {
		t.Helper()
		cbs, err := db.Callbacks(ctx, job.ID, 0, false)
		if err != nil {
			t.Fatal(err)
		}
		after, err := db.CallbacksAfter(ctx, 0, nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := db.Deliveries(ctx, job.ID)
		if err != nil {
			t.Fatal(err)
		}
		seen := 0
		for i, cb := range cbs {
			if cb.Event != store.EventTask {
				continue
			}
			seen++
			for name, got := range map[string][]byte{"Callbacks": cb.Message, "CallbacksAfter": after[i].Message, "Deliveries": rows[i].Message} {
				if string(got) != msgs[cb.TaskSeq] {
					t.Errorf("%s, %s: task %d's message is %.80q…, want %.80q…", when, name, cb.TaskSeq, got, msgs[cb.TaskSeq])
				}
			}
		}
		if seen != 4 {
			t.Errorf("%s: %d task callbacks, want 4", when, seen)
		}
	}
	check("after the commit")
	if _, _, err := db.FinishJob(ctx, job.ID, time.Second, store.Span{}, func(store.Job) ([]byte, error) { return []byte(`{"event":"job"}`), nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := db.RetryJob(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	if n := queryInt(t, raw, "SELECT count(*) FROM results WHERE seq = 1"); n != 0 {
		t.Fatalf("the failed result is still there after the retry")
	}
	check("after a retry")
}
