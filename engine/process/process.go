// Package process is how pcd handles the processes its tasks start: each
// command in a process group of its own, marked with a run id that its
// descendants inherit; the runner as their subreaper, so that one that
// leaves its group is still found; the kill of a dead runner's leftovers
// by the next runner; and, on PostgreSQL, the fence, a small process that
// kills a frozen runner's commands once its lease runs out.
package process

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

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

// CheckCommand finds a command as exec would: in PATH, or as a path.
func CheckCommand(name, dir string) error {
	if !strings.Contains(name, "/") {
		if _, err := exec.LookPath(name); err != nil {
			return fmt.Errorf("command %q not found in PATH", name)
		}
		return nil
	}
	path := name
	if !filepath.IsAbs(path) && dir != "" {
		path = filepath.Join(dir, path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("command %s: %w", name, err)
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("command %s is not an executable file", name)
	}
	return nil
}

// Limits are what a command may use: Memory in bytes and CPUs, each 0
// for no limit.
type Limits struct {
	Memory int64
	CPUs   float64
}

// IsZero reports no limit.
func (l Limits) IsZero() bool { return l.Memory == 0 && l.CPUs == 0 }

// CgroupUsage is what the processes of a task's cgroup used.
type CgroupUsage struct {
	// Peak is the most memory charged at once, in bytes: resident
	// memory and the page cache, as the limit counts it.
	Peak int64
	// OOMKilled: the kernel killed one of its processes for want of
	// memory.
	OOMKilled bool
	// OverOwn: the cgroup's own memory limit was reached (else an
	// enclosing one was).
	OverOwn bool
}
