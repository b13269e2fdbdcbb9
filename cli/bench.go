package cli

import (
	"errors"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/pcd-dev/pcd/internal/bench"
)

func benchCommand(env Env) *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "measure the performance budget's workloads and print a table",
		Description: `Runs each workload several times on a temporary database (synchronous=FULL
unless a row says otherwise), each run in its own pcd process, and prints
the median, min and max of each, with the peak RSS of the process that ran
the work. --quick runs small sizes once: a smoke test, not a measurement.`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "quick", Usage: "small sizes, one run each (a smoke test)"},
			&cli.IntFlag{Name: "runs", Value: 3, Usage: "runs per workload"},
			&cli.IntFlag{Name: "tasks", Value: 1_000_000, Usage: "tasks in the large no-op job"},
			&cli.StringFlag{Name: "dir", Usage: "where the temporary databases go (default: a new temp dir)"},
			&cli.StringFlag{Name: "only", Usage: "run only the workloads whose names contain `TEXT`"},
			&cli.StringFlag{Name: "postgres", EnvVars: []string{"PCD_BENCH_POSTGRES"}, Usage: "also measure on the PostgreSQL server at `URL` (a schema per run)"},
			&cli.BoolFlag{Name: "river", Usage: "with --postgres, measure River " + bench.RiverVersion + " on the same server, alternating (needs the go command)"},
			jsonFlag(),
		},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			err := bench.Run(bench.Options{
				Quick: c.Bool("quick"), Runs: c.Int("runs"), Tasks: c.Int("tasks"), Dir: c.String("dir"),
				Only: c.String("only"), Postgres: c.String("postgres"), River: c.Bool("river"), JSON: c.Bool("json"),
				Stdout: env.Stdout, Stderr: env.Stderr,
			})
			if errors.Is(err, bench.ErrUsage) {
				return usageError("%s", strings.TrimSuffix(err.Error(), ": "+bench.ErrUsage.Error()))
			}
			return err
		},
	}
}
