package bench

import (
	"context"
	"fmt"
	"os/exec"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgCommitLatency runs n `sleep 0.2` commands on two daemons sharing a
// PostgreSQL schema and measures how long after each command ended its
// result committed (its callback's commit time against the result's end):
// what bounds the window in which a daemon's death makes a task run twice.
func (p *pgBench) pgCommitLatency(n int) ([]benchRow, error) {
	median := benchRow{Workload: fmt.Sprintf("pg: result committed after its command ended, 2 daemons, %d `sleep 0.2` (median)", n),
		Unit: "ms", Target: "<= 100"}
	p99 := benchRow{Workload: "pg: the same, 99th percentile", Unit: "ms", Target: "<= 500"}
	file, err := p.jobFile("pg-latency.json", n, `{"kind":"exec","payload":{"argv":["sleep","0.2"]}}`)
	if err != nil {
		return nil, err
	}
	for range p.runs {
		m, q, err := p.pgCommitLatencyOnce(file)
		if err != nil {
			return nil, err
		}
		median.Values = append(median.Values, m)
		p99.Values = append(p99.Values, q)
	}
	return []benchRow{median, p99}, nil
}

func (p *pgBench) pgCommitLatencyOnce(file string) (median, p99 float64, err error) {
	ctx := context.Background()
	db, drop, err := p.schema()
	if err != nil {
		return 0, 0, err
	}
	defer drop()
	if _, _, err := p.pcd(ctx, db, nil, "submit", file); err != nil {
		return 0, 0, err
	}
	var daemons []*exec.Cmd
	defer func() {
		for _, d := range daemons {
			stop(d)
		}
	}()
	for range 2 {
		d, err := p.pgDaemon(db)
		if err != nil {
			return 0, 0, err
		}
		daemons = append(daemons, d)
	}
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(10 * time.Minute)
	for {
		var open int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM jobs WHERE finished_at IS NULL").Scan(&open); err != nil {
			return 0, 0, err
		}
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("the job did not finish in 10 minutes")
		}
		time.Sleep(100 * time.Millisecond)
	}
	err = conn.QueryRow(ctx, `SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY c.created_at - r.finished_at) / 1e6,
			percentile_cont(0.99) WITHIN GROUP (ORDER BY c.created_at - r.finished_at) / 1e6
		FROM results r JOIN callbacks c ON c.job_id = r.job_id AND c.task_seq = r.seq AND c.event = 'task'`).Scan(&median, &p99)
	if err != nil {
		return 0, 0, fmt.Errorf("commit latency: %w", err)
	}
	return median, p99, nil
}
