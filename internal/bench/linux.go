package bench

import (
	"os/exec"
	"syscall"
)

// dieWithBench makes a process that pcd bench starts die with it: a
// benchmark stopped half-way leaves no daemon behind working its database.
func dieWithBench(cmd *exec.Cmd) *exec.Cmd {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	return cmd
}
