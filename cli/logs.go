package cli

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/store"
)

func logsCommand(env Env) *cli.Command {
	return &cli.Command{
		Name:      "logs",
		Usage:     "print a task's captured output",
		ArgsUsage: "TASK_ID",
		Description: `Prints an exec task's captured stdout to stdout and its stderr to stderr
(the last --output-cap bytes of each), and says on stderr when either was
cut. For other kinds it prints the task's JSON result. --json prints the
stored result.`,
		Flags:        []cli.Flag{jsonFlag()},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageError("give one task id (a unique prefix is enough), got %d arguments", c.NArg())
			}
			db, err := openReader(c)
			if err != nil {
				return err
			}
			defer db.Close()
			t, err := db.FindTask(c.Context, c.Args().First())
			if err != nil {
				return err
			}
			if c.Bool("json") || t.Kind != "exec" {
				if len(t.Result) == 0 {
					if t.State.Final() {
						fmt.Fprintf(env.Stderr, "pcd: task %s %s with no result\n", t.UUID, t.State)
					} else {
						fmt.Fprintf(env.Stderr, "pcd: task %s is %s: no output yet\n", t.UUID, t.State)
					}
					return nil
				}
				_, err := fmt.Fprintf(env.Stdout, "%s\n", t.Result)
				return err
			}
			if len(t.Result) == 0 {
				fmt.Fprintf(env.Stderr, "pcd: task %s is %s: no output yet\n", t.UUID, t.State)
				return nil
			}
			var res engine.ExecResult
			if err := json.Unmarshal(t.Result, &res); err != nil {
				return fmt.Errorf("task %s: stored result: %w", t.UUID, err)
			}
			return printLogs(env, t, res)
		},
	}
}

func printLogs(env Env, t store.TaskRow, res engine.ExecResult) error {
	if _, err := io.WriteString(env.Stdout, res.Stdout); err != nil {
		return err
	}
	if _, err := io.WriteString(env.Stderr, res.Stderr); err != nil {
		return err
	}
	for _, cut := range []struct {
		name string
		was  bool
		kept int
	}{{"stdout", res.StdoutTruncated, len(res.Stdout)}, {"stderr", res.StderrTruncated, len(res.Stderr)}} {
		if cut.was {
			fmt.Fprintf(env.Stderr, "pcd: note: task %s's %s was cut to its last %d bytes\n", t.UUID, cut.name, cut.kept)
		}
	}
	return nil
}
