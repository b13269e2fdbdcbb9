package process

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// A runner that is not root may not make a PID namespace: that takes
// CAP_SYS_ADMIN. It may make a user namespace, where it has every
// capability over what that namespace owns, but only while it is a
// single thread, which a Go program never is. So such a runner starts
// again as a child in a user namespace of its own (RunInUserNamespace):
//
//   - The child maps the runner's own uid and gid to themselves: its
//     files, its database and its commands keep their owners.
//   - It keeps CAP_SYS_ADMIN in the namespace as an ambient capability,
//     so that its spawner can make the PID namespace and its keeper can
//     mount the namespace's /proc. The spawner's thread drops it once the
//     keeper runs: the commands it forks get no capability.
//   - The parent waits for it and passes on the signals sent to it: a
//     SIGKILL of the parent kills the child (its death signal), and with
//     it the namespaces and everything in them.
//
// Inside, a command sees the users and groups other than its own as
// nobody (65534), and a set-user-ID program such as sudo gains nothing.

// usernsEnv marks the runner started again in a user namespace.
const usernsEnv = "PCD_USERNS_OF"

// ContainVar set to "off" keeps commands in the runner's own namespaces:
// no PID namespace, and no user namespace for a runner that is not root.
const ContainVar = "PCD_CONTAIN"

// userns is why this runner is not in a user namespace of its own, when
// it tried; and whether it is in one.
var userns struct {
	inside bool
	err    error
}

// RunInUserNamespace starts this program again, with the same arguments,
// in a user namespace of its own, where a runner that is not root can
// contain its commands (see above). It returns ran false, at once, where
// that is not needed or not possible (the reason goes with Contain's
// error); the caller then goes on. With ran true, the child has ended and
// the caller exits with code. A child killed by a signal kills this
// process with the same signal, before it returns.
//
// Call it first thing in a command that runs a runner; the binary must
// call RunFence in main.
func RunInUserNamespace() (code int, ran bool) {
	if os.Getenv(usernsEnv) != "" {
		os.Unsetenv(usernsEnv) // not for the commands
		userns.inside = true
		return 0, false
	}
	if os.Getenv(ContainVar) == "off" || !fenceLinked.Load() || hasCapSysAdmin() {
		return 0, false
	}
	self, err := os.Executable()
	if err != nil {
		userns.err = err
		return 0, false
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	cmd.Env = append(os.Environ(), usernsEnv+"="+strconv.Itoa(os.Getpid()))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:                 unix.CLONE_NEWUSER,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: os.Getuid(), HostID: os.Getuid(), Size: 1}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: os.Getgid(), HostID: os.Getgid(), Size: 1}},
		GidMappingsEnableSetgroups: false,
		AmbientCaps:                []uintptr{unix.CAP_SYS_ADMIN},
		Pdeathsig:                  syscall.SIGKILL,
	}
	// Signals for the child are caught before it starts, so that none
	// is lost in between; the death signal is tied to this thread.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	signal.Ignore(syscall.SIGPIPE)
	defer signal.Reset(syscall.SIGPIPE)
	runtime.LockOSThread()
	if err := cmd.Start(); err != nil {
		runtime.UnlockOSThread()
		userns.err = fmt.Errorf("start the runner in a user namespace: %w", err)
		return 0, false
	}
	tty := openTTY()
	if tty != nil {
		defer tty.Close()
	}
	done := make(chan *os.ProcessState, 1)
	go func() {
		st, _ := cmd.Process.Wait()
		done <- st
	}()
	for {
		select {
		case sig := <-sigs:
			if fromTerminal(sig, tty) {
				continue // the child is in the same process group: it has it too
			}
			_ = cmd.Process.Signal(sig)
		case st := <-done:
			ws, _ := st.Sys().(syscall.WaitStatus)
			if ws.Signaled() {
				signal.Reset(ws.Signal())
				_ = syscall.Kill(os.Getpid(), ws.Signal())
				return 128 + int(ws.Signal()), true
			}
			return st.ExitCode(), true
		}
	}
}

// openTTY opens the controlling terminal, nil without one.
func openTTY() *os.File {
	f, err := os.OpenFile("/dev/tty", os.O_RDONLY|unix.O_NOCTTY, 0)
	if err != nil {
		return nil
	}
	return f
}

// fromTerminal reports whether sig may have come from the terminal,
// which signals its whole foreground process group: SIGINT, SIGQUIT or
// SIGHUP while this process is in that group.
func fromTerminal(sig os.Signal, tty *os.File) bool {
	if tty == nil || (sig != syscall.SIGINT && sig != syscall.SIGQUIT && sig != syscall.SIGHUP) {
		return false
	}
	fg, err := unix.IoctlGetInt(int(tty.Fd()), unix.TIOCGPGRP)
	return err == nil && fg == unix.Getpgrp()
}

// hasCapSysAdmin reports whether this process may make namespaces
// itself: CAP_SYS_ADMIN is in its effective set.
func hasCapSysAdmin() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return os.Geteuid() == 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<unix.CAP_SYS_ADMIN) != 0
		}
	}
	return os.Geteuid() == 0
}

// dropAmbientCaps clears the calling thread's ambient and inheritable
// capabilities, which a runner in a user namespace holds: what it forks
// from this thread then gets none.
func dropAmbientCaps() error {
	if !userns.inside {
		return nil
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("drop the ambient capabilities: %w", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read the capabilities: %w", err)
	}
	data[0].Inheritable, data[1].Inheritable = 0, 0
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("drop the inheritable capabilities: %w", err)
	}
	return nil
}

// containError is why a runner has no PID namespace, with why it has no
// user namespace either, where it tried one.
func containError(err error) error {
	switch {
	case os.Getenv(ContainVar) == "off":
		return errors.New(ContainVar + "=off")
	case userns.err != nil:
		return fmt.Errorf("%w; %v", err, userns.err)
	case userns.inside:
		// Some systems let a user make a user namespace but not use it
		// (Ubuntu's AppArmor: kernel.apparmor_restrict_unprivileged_userns).
		return fmt.Errorf("in the runner's user namespace: %w", err)
	}
	return err
}
