package engine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// DefaultLiveCap is how large a running command's live output file grows
// before it starts over: 8 MiB.
const DefaultLiveCap = 8 << 20

// LiveFiles lists the live output files of a task in dir, newest attempt
// last: <task id>.<pid>.log, written by the runner that runs it.
func LiveFiles(dir, taskID string) []string {
	matches, _ := filepath.Glob(filepath.Join(dir, taskID+".*.log"))
	return matches
}

// CleanLive removes the live output files in dir that no process writes:
// those of runners that died before their commands ended. It keeps the
// files of live processes (another runner on this host, on a shared
// database).
func CleanLive(dir string) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, f := range files {
		parts := strings.Split(strings.TrimSuffix(filepath.Base(f), ".log"), ".")
		if len(parts) != 2 {
			continue
		}
		pid, err := strconv.Atoi(parts[1])
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.Remove(f)
		}
	}
}

// liveOutput is a running command's stdout and stderr, as they come, in
// one file that pcd logs --follow reads. The file is made at the first
// output: a command that prints nothing costs no file. It never fails
// the command: a file that cannot be written (a full disk) is given up,
// and the output is still kept in the result. Past max bytes the file
// starts over, so a chatty command cannot fill the disk.
type liveOutput struct {
	mu     sync.Mutex
	f      *os.File
	path   string
	n      int64
	max    int64
	failed bool // the file could not be made, or was given up
}

// openLive is the live output of task id, in dir; nil (writes nothing)
// if dir is "".
func openLive(dir, id string, max int64) *liveOutput {
	if dir == "" || id == "" {
		return nil
	}
	if max <= 0 {
		max = DefaultLiveCap
	}
	return &liveOutput{path: filepath.Join(dir, fmt.Sprintf("%s.%d.log", id, os.Getpid())), max: max}
}

func (l *liveOutput) Write(p []byte) (int, error) {
	if l == nil {
		return len(p), nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		if l.failed {
			return len(p), nil
		}
		f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
		if err != nil {
			l.failed = true
			return len(p), nil
		}
		l.f = f
	}
	b := p
	if int64(len(b)) > l.max {
		b = b[int64(len(b))-l.max:]
	}
	if l.n+int64(len(b)) > l.max {
		// Start over: a follower sees the file shrink and says so.
		if err := l.f.Truncate(0); err != nil {
			l.abandon()
			return len(p), nil
		}
		l.n = 0
	}
	if _, err := l.f.Write(b); err != nil {
		l.abandon()
		return len(p), nil
	}
	l.n += int64(len(b))
	return len(p), nil
}

func (l *liveOutput) abandon() {
	l.f.Close()
	os.Remove(l.path)
	l.f, l.failed = nil, true
}

// close removes the file once the command's output is all in: a follower
// that has it open reads it to its end.
func (l *liveOutput) close() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		l.abandon()
	}
}
