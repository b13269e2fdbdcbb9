//go:build !linux

package process

import (
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Start starts cmd in a process group of its own. Outside Linux
// there is no death signal and no subreaper: a SIGKILLed runner's
// commands are found again only by their recorded process group.
func Start(cmd *exec.Cmd, _ *Cgroup) (release func(), err error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	return func() {}, cmd.Start()
}

func Done(int) {}

// Usage is not read outside Linux.
func Usage(*os.ProcessState) (peakKiB int64, cpu time.Duration) { return 0, 0 }

// Subreaper is a no-op outside Linux.
func BecomeSubreaper() (stop func(), err error) { return func() {}, nil }

func StartTime(int) uint64 { return 0 }

func SweepAdopted(string) {}

// Proc is a running task's process group as recorded in the database.
type Group struct {
	Pgid  int
	Start uint64
}

// KillLeftovers does nothing outside Linux, where a process's start time
// cannot be read to tell a recorded group from a reused id.
func KillLeftovers([]Group, func([]string) (map[string]bool, error), time.Duration) (int, error) {
	return 0, nil
}
