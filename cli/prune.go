package cli

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pcd-dev/pcd/store/postgres"
)

func pruneCommand(env Env) *cli.Command {
	return &cli.Command{
		Name:  "prune",
		Usage: "remove finished jobs older than a duration, and give the space back",
		Description: `Removes the jobs that finished longer ago than --older-than, with their
tasks, results, attempts, callbacks and deliveries, in short transactions
(a runner goes on meanwhile), then returns the free space to the file
system. A job with a callback that a sink has not delivered yet (a hook
or webhook that is down, say) is kept unless --force; the count of those
is printed. The first prune of a database made before pcd gave space
back rewrites it once (VACUUM): that needs room for a copy of the file.`,
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "older-than", Usage: "remove jobs that finished longer ago than `DURATION` (such as 720h)"},
			&cli.BoolFlag{Name: "force", Usage: "remove them even if a sink has not delivered their callbacks"},
			jsonFlag(),
		},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageError("prune takes no arguments, got %q", c.Args().First())
			}
			if !c.IsSet("older-than") {
				return usageError("give --older-than DURATION (such as 720h): the age of the finished jobs to remove")
			}
			age := c.Duration("older-than")
			if age < 0 {
				return usageError("--older-than must not be negative, got %v", age)
			}
			db, err := openDB(c, true)
			if err != nil {
				return err
			}
			defer db.Close()
			res, err := db.Prune(c.Context, time.Now().Add(-age), c.Bool("force"), true)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return writeJSON(env.Stdout, map[string]any{"jobs": res.Jobs, "rows": res.Rows, "kept": res.Kept,
					"vacuumed": res.Vacuumed, "size_before": res.Before, "size_after": res.After})
			}
			if postgres.IsURL(db.Path()) {
				// PostgreSQL keeps a table's free pages for its new rows.
				fmt.Fprintf(env.Stdout, "pruned %s (%s); pcd's tables went from %s to %s (vacuumed: new rows reuse the space)\n",
					plural(res.Jobs, "job"), plural(res.Rows, "row"), mib(res.Before), mib(res.After))
				return pruneKept(env, res.Kept)
			}
			fmt.Fprintf(env.Stdout, "pruned %s (%s); the file went from %s to %s\n",
				plural(res.Jobs, "job"), plural(res.Rows, "row"), mib(res.Before), mib(res.After))
			if res.Vacuumed {
				fmt.Fprintln(env.Stdout, "the file was rewritten once (VACUUM) to give space back from now on")
			}
			return pruneKept(env, res.Kept)
		},
	}
}

// pruneKept says how many finished jobs prune kept for their sinks.
func pruneKept(env Env, kept int) error {
	if kept > 0 {
		fmt.Fprintf(env.Stderr, "pcd: kept %d finished jobs with callbacks that a sink has not delivered yet (`pcd callbacks JOB` shows them; --force removes them anyway)\n", kept)
	}
	return nil
}
func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
