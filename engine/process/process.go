// Package process is how pcd handles the processes its tasks start: each
// command in a process group of its own, marked with a run id that its
// descendants inherit; the runner as their subreaper, so that one that
// leaves its group is still found; the kill of a dead runner's leftovers
// by the next runner; and, on PostgreSQL, the fence, a small process that
// kills a frozen runner's commands once its lease runs out.
package process

import "strings"

// RunIDVar is the environment variable that marks every process a
// command starts: "<task uuid>.<attempt>" for a task, "hook.<n>" for a
// hook. Descendants inherit it, so pcd finds them even outside the
// command's process group.
const RunIDVar = "PCD_RUN_ID"

// TaskOfCookie is the task uuid in a run id, or "".
func TaskOfCookie(cookie string) string {
	id, _, ok := strings.Cut(cookie, ".")
	if !ok || id == "hook" {
		return ""
	}
	return id
}
