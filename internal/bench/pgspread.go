package bench

// pgSpread: a job of 100 one-second tasks, fewer than a daemon could
// claim, run by 2 daemons of 25 workers against 1, alternating: two
// should take about half the time, as each claims for its free workers.
// The time is pgNoop's, from the daemons' start to the job's end.
func (p *pgBench) pgSpread() (benchRow, error) {
	const n = 100
	row := benchRow{Workload: "pg: 100 `sleep 1`, 25 workers: 2 daemons / 1 daemon", Unit: "ratio", Target: "<= 0.6"}
	file, err := p.jobFile("pg-spread.json", n, `{"kind":"exec","payload":{"argv":["sleep","1"]}}`)
	if err != nil {
		return row, err
	}
	for range p.runs {
		one, _, _, err := p.pgNoop(file, n, 1)
		if err != nil {
			return row, err
		}
		two, _, _, err := p.pgNoop(file, n, 2)
		if err != nil {
			return row, err
		}
		row.Values = append(row.Values, one/two) // rates: time on two over time on one
	}
	return row, nil
}
