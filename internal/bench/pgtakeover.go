package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgTakeover measures how soon after a daemon's SIGKILL another takes its
// started tasks over (its log line), with a 2 s lease: the promise is the
// lease and a second.
func (p *pgBench) pgTakeover() (benchRow, error) {
	row := benchRow{Workload: "pg: SIGKILL of a daemon -> another takes its tasks over, lease 2 s", Unit: "s", Target: "<= 3"}
	file, err := p.jobFile("pg-takeover.json", 400, `{"kind":"exec","payload":{"argv":["sleep","0.5"]}}`)
	if err != nil {
		return row, err
	}
	for range p.runs {
		secs, err := p.pgTakeoverOnce(file)
		if err != nil {
			return row, err
		}
		row.Values = append(row.Values, secs)
	}
	return row, nil
}

func (p *pgBench) pgTakeoverOnce(file string) (float64, error) {
	ctx := context.Background()
	db, drop, err := p.schema()
	if err != nil {
		return 0, err
	}
	defer drop()
	if _, _, err := p.pcd(ctx, db, nil, "submit", file); err != nil {
		return 0, err
	}
	lease := []string{"PCD_LEASE=2s", "PCD_GRACE=100ms"} // the survivor need not finish its sleeps
	victim, err := p.pgDaemonEnv(db, lease, nil)
	if err != nil {
		return 0, err
	}
	defer stop(victim)
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM running u JOIN runners g ON g.id = u.runner_id
			WHERE u.started_at IS NOT NULL AND g.pid = $1`, victim.Process.Pid).Scan(&n); err != nil {
			return 0, err
		}
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			return 0, errors.New("the first daemon started no task in a minute")
		}
	}
	took := make(chan struct{})
	survivor, err := p.pgDaemonEnv(db, lease, &lineWatch{match: "took over the started tasks", found: took})
	if err != nil {
		return 0, err
	}
	defer stop(survivor)
	victim.Process.Kill()
	t0 := time.Now()
	select {
	case <-took:
		return time.Since(t0).Seconds(), nil
	case <-time.After(time.Minute):
		return 0, fmt.Errorf("no takeover a minute after the kill")
	}
}

// pgDaemonEnv is pgDaemon with extra environment and, if w is set, its
// log to w as well.
func (p *pgBench) pgDaemonEnv(db string, env []string, w *lineWatch) (*exec.Cmd, error) {
	cmd := dieWithBench(exec.Command(p.self, "daemon", "--log-level", "info"))
	cmd.Env = append(append(os.Environ(), "PCD_DB="+db), env...)
	started := make(chan struct{})
	cmd.Stderr = &lineWatch{match: "daemon started", found: started, next: w}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	select {
	case <-started:
		return cmd, nil
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		return nil, errors.New("the daemon did not start")
	}
}
