//go:build !linux

package engine

import (
	"os/exec"
	"syscall"
	"time"
)

// startProcess starts cmd in a process group of its own. Outside Linux
// there is no death signal and no subreaper: a SIGKILLed runner's
// commands are found again only by their recorded process group.
func startProcess(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	return cmd.Start()
}

func processDone(int) {}

// Subreaper is a no-op outside Linux.
func becomeSubreaper() (stop func(), err error) { return func() {}, nil }

func processStart(int) uint64 { return 0 }

func sweepAdopted(string) {}

// Proc is a running task's process group as recorded in the database.
type procGroup struct {
	Pgid  int
	Start uint64
}

// killLeftovers does nothing outside Linux, where a process's start time
// cannot be read to tell a recorded group from a reused id.
func killLeftovers([]procGroup, func([]string) (map[string]bool, error), time.Duration) (int, error) {
	return 0, nil
}
