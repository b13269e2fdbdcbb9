package bench

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/store/postgres"
)

// The PostgreSQL rows of pcd bench (--postgres URL): each run works in a
// schema of its own on that server, dropped after it. With --river, River
// (github.com/riverqueue/river) runs the same no-op workload on the same
// server, alternating with pcd, built from the Go module cache by the go
// command from the program below.

//go:embed testdata/riverbench/main.go
var riverBenchSource []byte

// RiverVersion is the River release measured.
const RiverVersion = "v0.51.2"

// pgBench holds the PostgreSQL server and, with --river, the River
// program.
type pgBench struct {
	*bench
	server string
	river  string // the built riverbench binary, "" without --river
}

// schema creates a fresh schema and returns the server's URL set to it,
// and a function that drops it.
func (p *pgBench) schema() (string, func(), error) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, p.server)
	if err != nil {
		return "", nil, fmt.Errorf("connect to %s: %w", postgres.Redact(p.server), err)
	}
	defer conn.Close(ctx)
	name := fmt.Sprintf("pcd_bench_%d_%x", os.Getpid(), rand.Uint32())
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		return "", nil, err
	}
	u, err := url.Parse(p.server)
	if err != nil {
		return "", nil, err
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	drop := func() {
		c, err := pgx.Connect(ctx, p.server)
		if err != nil {
			return
		}
		defer c.Close(ctx)
		_, _ = c.Exec(ctx, "DROP SCHEMA "+name+" CASCADE")
	}
	return u.String(), drop, nil
}

// pgDaemon starts a daemon on db and waits until it has registered.
func (p *pgBench) pgDaemon(db string) (*exec.Cmd, error) { return p.pgDaemonEnv(db, nil, nil) }

// lineWatch closes found the first time the output has match; then, if
// next is set, it passes the output on to it.
type lineWatch struct {
	match string
	found chan struct{}
	seen  bool
	tail  string
	next  *lineWatch
}

func (w *lineWatch) Write(b []byte) (int, error) {
	if w.seen && w.next != nil {
		return w.next.Write(b)
	}
	if !w.seen {
		w.tail += string(b)
		if strings.Contains(w.tail, w.match) {
			w.seen = true
			close(w.found)
			w.tail = ""
		} else if len(w.tail) > 4096 {
			w.tail = w.tail[len(w.tail)-len(w.match):]
		}
	}
	return len(b), nil
}

// pgRuns measures, alternating run by run: the submit of an n-task no-op
// job file; its run by one daemon and by two (25 workers each), from the
// daemons' start to the job's end; and with --river, River working n
// no-op jobs with 1 client of 25 workers and with 4 clients of 500.
func (p *pgBench) pgRuns(n int) ([]benchRow, error) {
	submit := benchRow{Workload: fmt.Sprintf("pg: submit %d tasks from a file (COPY)", n), Unit: "tasks/s", Target: ">= 200000"}
	one := benchRow{Workload: fmt.Sprintf("pg: no-op run, 1 daemon x 25 workers, %d tasks", n), Unit: "tasks/s", Target: ">= 10x River, 25 workers"}
	two := benchRow{Workload: fmt.Sprintf("pg: no-op run, 2 daemons x 25 workers, %d tasks", n), Unit: "tasks/s", Target: ">= 2x River's best"}
	riverInsert := benchRow{Workload: fmt.Sprintf("river %s: InsertManyFast %d jobs", RiverVersion, n), Unit: "jobs/s", Target: "(baseline)"}
	river25 := benchRow{Workload: "river: no-op jobs, 1 client x 25 workers", Unit: "jobs/s", Target: "(baseline)"}
	riverBest := benchRow{Workload: "river: no-op jobs, 4 clients x 500 workers", Unit: "jobs/s", Target: "(baseline)"}
	file, err := p.jobFile("pg-noop.json", n, `{"kind":"noop"}`)
	if err != nil {
		return nil, err
	}
	for range p.runs {
		for _, daemons := range []int{1, 2} {
			rate, submitRate, rss, err := p.pgNoop(file, n, daemons)
			if err != nil {
				return nil, err
			}
			submit.Values = append(submit.Values, submitRate)
			row := &one
			if daemons == 2 {
				row = &two
			}
			row.Values = append(row.Values, rate)
			row.RSSMiB = max(row.RSSMiB, rss)
		}
		if p.river == "" {
			continue
		}
		for _, cfg := range []struct {
			row              *benchRow
			clients, workers int
		}{{&river25, 1, 25}, {&riverBest, 4, 500}} {
			r, err := p.riverRun(n, cfg.clients, cfg.workers)
			if err != nil {
				return nil, err
			}
			cfg.row.Values = append(cfg.row.Values, r.Jobs)
			cfg.row.RSSMiB = max(cfg.row.RSSMiB, r.RSS)
			riverInsert.Values = append(riverInsert.Values, r.Insert)
		}
	}
	rows := []benchRow{submit, one, two}
	if p.river == "" {
		return rows, nil
	}
	ratio := func(name, target string, a, b benchRow) benchRow {
		return benchRow{Workload: name, Unit: "ratio", Target: target, Values: []float64{a.median() / b.median()}}
	}
	return append(rows, riverInsert, river25, riverBest,
		ratio("pg: submit / River InsertManyFast", "report", submit, riverInsert),
		ratio("pg: 1 daemon / River 1 x 25", ">= 10", one, river25),
		ratio("pg: 2 daemons / River 4 x 500", ">= 2", two, riverBest)), nil
}

// pgNoop submits file to a fresh schema, then runs it with daemons; it
// returns the run's rate (from the daemons' start to the job's end), the
// submit's rate, and the peak RSS of a daemon.
func (p *pgBench) pgNoop(file string, n, daemons int) (rate, submitRate, rss float64, err error) {
	db, drop, err := p.schema()
	if err != nil {
		return 0, 0, 0, err
	}
	defer drop()
	ctx := context.Background()
	t0 := time.Now()
	out, _, err := p.pcd(ctx, db, nil, "submit", file)
	if err != nil {
		return 0, 0, 0, err
	}
	submitRate = float64(n) / time.Since(t0).Seconds()
	s, err := postgres.Open(ctx, db, postgres.Options{MustExist: true})
	if err != nil {
		return 0, 0, 0, err
	}
	defer s.Close()
	job, err := s.FindJob(ctx, strings.TrimSpace(out))
	if err != nil {
		return 0, 0, 0, err
	}
	var cmds []*exec.Cmd
	defer func() {
		for _, c := range cmds {
			rss = max(rss, stop(c))
		}
	}()
	t1 := time.Now()
	for range daemons {
		c, err := p.pgDaemon(db)
		if err != nil {
			return 0, 0, 0, err
		}
		cmds = append(cmds, c)
	}
	job, err = waitFinished(ctx, s, job.ID, 10*time.Minute)
	if err != nil {
		return 0, 0, 0, err
	}
	return float64(n) / job.FinishedAt.Sub(t1).Seconds(), submitRate, 0, nil
}

// waitFinished polls a job until it has finished.
func waitFinished(ctx context.Context, s store.Store, id int64, limit time.Duration) (store.Job, error) {
	deadline := time.Now().Add(limit)
	for {
		job, err := s.Job(ctx, id)
		if err != nil || job.Finished() {
			return job, err
		}
		if time.Now().After(deadline) {
			return job, fmt.Errorf("job not finished after %v: %d of %d done", limit, job.Done(), job.Total)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pgRestart: a daemon on a half-done n-task job is killed; how long until
// a new one completes a task.
func (p *pgBench) pgRestart(n int) (benchRow, error) {
	row := benchRow{Workload: fmt.Sprintf("pg: restart with a %d-task job half done -> running again", n), Unit: "s", Target: "<= 1"}
	file, err := p.jobFile("pg-restart.json", n, `{"kind":"noop"}`)
	if err != nil {
		return row, err
	}
	ctx := context.Background()
	for try := 0; len(row.Values) < p.runs && try < 4*p.runs; try++ {
		v, rss, err := p.pgRestartOnce(ctx, file, n)
		if err != nil {
			return row, err
		}
		if v >= 0 {
			row.Values = append(row.Values, v)
			row.RSSMiB = max(row.RSSMiB, rss)
		}
	}
	return row, nil
}

// pgRestartOnce returns -1 when the job finished before it was caught
// half done.
func (p *pgBench) pgRestartOnce(ctx context.Context, file string, n int) (secs, rss float64, err error) {
	db, drop, err := p.schema()
	if err != nil {
		return 0, 0, err
	}
	defer drop()
	out, _, err := p.pcd(ctx, db, nil, "submit", file)
	if err != nil {
		return 0, 0, err
	}
	s, err := postgres.Open(ctx, db, postgres.Options{MustExist: true})
	if err != nil {
		return 0, 0, err
	}
	defer s.Close()
	job, err := s.FindJob(ctx, strings.TrimSpace(out))
	if err != nil {
		return 0, 0, err
	}
	d, err := p.pgDaemon(db)
	if err != nil {
		return 0, 0, err
	}
	for job.Done() < int64(n/2) && !job.Finished() {
		time.Sleep(time.Millisecond)
		if job, err = s.Job(ctx, job.ID); err != nil {
			d.Process.Kill()
			d.Wait()
			return 0, 0, err
		}
	}
	d.Process.Kill()
	d.Wait()
	if job, err = s.Job(ctx, job.ID); err != nil || job.Finished() {
		return -1, 0, err
	}
	before := job.Done()
	t0 := time.Now()
	cmd := dieWithBench(exec.Command(p.self, "daemon", "--log-level", "warn"))
	cmd.Env = append(os.Environ(), "PCD_DB="+db)
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	for job.Done() <= before && time.Since(t0) < time.Minute {
		time.Sleep(time.Millisecond)
		if job, err = s.Job(ctx, job.ID); err != nil {
			break
		}
	}
	secs = time.Since(t0).Seconds()
	return secs, stop(cmd), err
}

// riverResult is what riverbench prints.
type riverResult struct {
	Insert float64 `json:"insert_per_sec"`
	Jobs   float64 `json:"jobs_per_sec"`
	RSS    float64 `json:"rss_mib"`
}

func (p *pgBench) riverRun(n, clients, workers int) (riverResult, error) {
	var r riverResult
	db, drop, err := p.schema()
	if err != nil {
		return r, err
	}
	defer drop()
	u, _ := url.Parse(db)
	schema := u.Query().Get("search_path")
	cmd := dieWithBench(exec.Command(p.river, "-db", p.server, "-schema", schema, "-jobs", fmt.Sprint(n),
		"-clients", fmt.Sprint(clients), "-workers", fmt.Sprint(workers)))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return r, fmt.Errorf("river: %w: %s", err, lastLine(stderr.String()))
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("river printed %q: %w", out, err)
	}
	return r, nil
}

// buildRiver builds riverbench with the go command, from the module
// cache (or the module proxy), into dir.
func buildRiver(dir string) (string, error) {
	src := filepath.Join(dir, "riverbench")
	if err := os.MkdirAll(src, 0o700); err != nil {
		return "", err
	}
	mod := "module riverbench\n\ngo 1.26\n\nrequire (\n\tgithub.com/riverqueue/river " + RiverVersion +
		"\n\tgithub.com/riverqueue/river/riverdriver/riverpgxv5 " + RiverVersion + "\n)\n"
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte(mod), 0o600); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), riverBenchSource, 0o600); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "riverbench.bin")
	for _, args := range [][]string{{"mod", "tidy"}, {"build", "-o", bin, "."}} {
		cmd := exec.Command("go", args...)
		cmd.Dir = src
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go %s: %w: %s", strings.Join(args, " "), err, lastLine(string(out)))
		}
	}
	return bin, nil
}
