package process

import (
	"os/exec"
	"time"

	"golang.org/x/sys/unix"
)

const fenceSupported = true

// startFenceProcess starts the fence, known to the exec kind's reaper as a
// process of its own (it is neither reaped nor killed by the sweeps of
// adopted children).
func startFenceProcess(cmd *exec.Cmd) error {
	procs.mu.Lock()
	defer procs.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	if procs.live == nil {
		procs.live = map[int]bool{}
	}
	procs.live[cmd.Process.Pid] = true
	return nil
}

// fenceReaped records that the fence has been reaped.
func fenceReaped(pid int) { Done(pid) }

// fenceNow is the fence's clock: CLOCK_BOOTTIME, which goes on while the
// machine is suspended, where the monotonic clock stops. A lease that ran
// out during a suspend has run out when the fence wakes.
func fenceNow() time.Time {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return time.Now()
	}
	return time.Unix(ts.Sec, ts.Nsec)
}
