//go:build !linux

package bench

import "os/exec"

// dieWithBench is a no-op where there is no parent-death signal.
func dieWithBench(cmd *exec.Cmd) *exec.Cmd { return cmd }
