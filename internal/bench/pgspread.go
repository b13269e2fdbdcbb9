package bench

import (
	"context"
	"strings"
	"time"

	"github.com/pcd-dev/pcd/store/postgres"
)

// pgSpread: a job of 100 one-second tasks, fewer than a daemon could
// claim, run by 2 daemons of 25 workers against 1, alternating: two
// should take about half the time, as each claims for its free workers.
func (p *pgBench) pgSpread() (benchRow, error) {
	row := benchRow{Workload: "pg: 100 `sleep 1`, 25 workers: 2 daemons / 1 daemon", Unit: "ratio", Target: "<= 0.6"}
	file, err := p.jobFile("pg-spread.json", 100, `{"kind":"exec","payload":{"argv":["sleep","1"]}}`)
	if err != nil {
		return row, err
	}
	for range p.runs {
		one, err := p.pgSpreadOnce(file, 1)
		if err != nil {
			return row, err
		}
		two, err := p.pgSpreadOnce(file, 2)
		if err != nil {
			return row, err
		}
		row.Values = append(row.Values, two/one)
	}
	return row, nil
}

// pgSpreadOnce runs file on daemons started on a fresh schema and returns
// the seconds from their start to the job's end.
func (p *pgBench) pgSpreadOnce(file string, daemons int) (float64, error) {
	db, drop, err := p.schema()
	if err != nil {
		return 0, err
	}
	defer drop()
	ctx := context.Background()
	out, _, err := p.pcd(ctx, db, nil, "submit", file)
	if err != nil {
		return 0, err
	}
	s, err := postgres.Open(ctx, db, postgres.Options{MustExist: true})
	if err != nil {
		return 0, err
	}
	defer s.Close()
	job, err := s.FindJob(ctx, strings.TrimSpace(out))
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	for range daemons {
		c, err := p.pgDaemon(db)
		if err != nil {
			return 0, err
		}
		defer stop(c)
	}
	job, err = waitFinished(ctx, s, job.ID, 5*time.Minute)
	if err != nil {
		return 0, err
	}
	return job.FinishedAt.Sub(t0).Seconds(), nil
}
