package cli

import (
	"bufio"
	"fmt"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/store"
)

// dryRun prints the commands of a job's tasks, one a line, as GNU
// parallel --dry-run does, and writes nothing: an exec task's shell line,
// or its argv quoted for sh; a task of another kind as its kind and
// payload.
func dryRun(env Env, jf engine.JobFile) error {
	w := bufio.NewWriter(env.Stdout)
	print := func(tasks []store.NewTask) {
		for _, t := range tasks {
			fmt.Fprintln(w, commandLine(t.Kind, t.Payload))
		}
	}
	nj := jf.NewJob()
	print(nj.Tasks)
	if nj.More != nil {
		for batch, err := range nj.More {
			if err != nil {
				return err
			}
			print(batch)
		}
	}
	return w.Flush()
}
