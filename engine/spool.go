package engine

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/pcd-dev/pcd/internal/rundir"
)

// An exec task's result keeps at most OutputCap bytes of each of its
// stdout and stderr: the database holds text of a bounded size. What does
// not fit, and output that is not text, goes whole to the task's spool
// files, one per stream, under the runner's spool directory:
//
//	<dir>/<job id>/<task id>.stdout
//	<dir>/<job id>/<task id>.stderr
//
// The result then says so (ExecResult.StdoutSpooled), and pcd run and
// pcd logs print the file. A command's output is never held whole in
// memory: at most OutputCap bytes of each stream, until it spills.
// Pruning a job removes its spool directory.

// SpoolPath is the spool file of a task's stream ("stdout" or "stderr")
// in dir, or "" when an id is not one that pcd makes (a path must never
// come from a database row as it is).
func SpoolPath(dir, jobID, taskID, stream string) string {
	if dir == "" || !plainID(jobID) || !plainID(taskID) || (stream != "stdout" && stream != "stderr") {
		return ""
	}
	return filepath.Join(dir, jobID, taskID+"."+stream)
}

// OpenSpool opens the spool file of a task's stream for reading. A file
// that is not a regular file is refused.
func OpenSpool(dir, jobID, taskID, stream string) (*os.File, error) {
	path := SpoolPath(dir, jobID, taskID, stream)
	if path == "" {
		return nil, errNoSpool
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	return f, nil
}

// RemoveSpool removes a job's spool files; none is no error.
func RemoveSpool(dir, jobID string) error {
	if dir == "" || !plainID(jobID) {
		return nil
	}
	return os.RemoveAll(filepath.Join(dir, jobID))
}

// plainID says whether id is made of what a UUID is made of.
func plainID(id string) bool {
	return id != "" && len(id) <= 64 && strings.Trim(id, "0123456789abcdef-") == ""
}

// spool is one stream of a running command: held in memory up to max
// bytes, then written whole to path, from its first byte. If the file
// cannot be written (no spool directory, a full disk), it keeps the last
// max bytes instead, and says why.
type spool struct {
	path string
	max  int
	buf  []byte   // everything so far, while it fits in max
	f    *os.File // once spilled
	tail *tail    // once the spool failed: the last max bytes
	err  error    // why the spool failed
}

func newSpool(path string, max int) *spool { return &spool{path: path, max: max} }

// Write never fails: the command's output is always read to its end.
func (s *spool) Write(p []byte) (int, error) {
	switch {
	case s.tail != nil:
		return s.tail.Write(p)
	case s.f == nil && len(s.buf)+len(p) <= s.max:
		s.buf = append(s.buf, p...)
		return len(p), nil
	case s.f == nil:
		if err := s.spill(); err != nil {
			s.fail(err)
			return s.tail.Write(p)
		}
	}
	if _, err := s.f.Write(p); err != nil {
		s.fail(fmt.Errorf("write %s: %w", s.path, err))
		return s.tail.Write(p)
	}
	return len(p), nil
}

// spill creates the spool file with what is held so far.
func (s *spool) spill() error {
	if s.path == "" {
		return errNoSpool
	}
	jobDir := filepath.Dir(s.path)
	if err := os.MkdirAll(jobDir, 0o700); err != nil {
		return err
	}
	// The directories may be in a shared place (beside a database in
	// /tmp): another user's, or one they can write in, is refused.
	for _, d := range []string{filepath.Dir(jobDir), jobDir} {
		if !rundir.Private(d) {
			return fmt.Errorf("spool directory %s is not a directory of yours that only you can write in", d)
		}
	}
	f, err := os.OpenFile(s.path, os.O_RDWR|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(s.buf); err != nil {
		f.Close()
		os.Remove(s.path)
		return fmt.Errorf("write %s: %w", s.path, err)
	}
	s.f, s.buf = f, nil
	return nil
}

// fail gives up the spool: from here on only a tail is kept, seeded with
// what is held, and the partial file goes.
func (s *spool) fail(err error) {
	s.err = err
	s.tail = newTail(s.max)
	if s.f != nil {
		s.tail.cut = true // the file held bytes that the tail never saw
		s.f.Close()
		os.Remove(s.path)
		s.f = nil
	}
	s.tail.Write(s.buf)
	s.buf = nil
}

// errNoSpool: the runner has no spool directory.
var errNoSpool = errors.New("no spool directory")

// spooled is one stream's part of an ExecResult.
type spooled struct {
	text    string // what the result keeps
	cut     bool   // text is the stream's end only
	spooled bool   // the whole stream is in the spool file
	err     error  // why bytes were lost, if they were
}

// finish ends the stream once the command's output is all read: the text
// the result keeps, and whether the spool file holds the whole. Output
// that fits but is not text is spooled too, so that it prints byte for
// byte.
func (s *spool) finish() spooled {
	switch {
	case s.tail != nil:
		return spooled{text: s.tail.String(), cut: s.tail.cut, err: s.err}
	case s.f == nil && (utf8.Valid(s.buf) || s.path == ""):
		return spooled{text: string(s.buf)}
	case s.f == nil:
		if err := s.spill(); err != nil {
			return spooled{text: string(s.buf), err: err}
		}
	}
	end, err := s.end()
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	s.f = nil
	if err != nil {
		os.Remove(s.path)
		return spooled{text: end.String(), cut: true, err: err}
	}
	return spooled{text: end.String(), cut: end.cut, spooled: true}
}

// end is the last max bytes of the spool file.
func (s *spool) end() (*tail, error) {
	t := newTail(s.max)
	size, err := s.f.Seek(0, io.SeekCurrent)
	if err != nil {
		return t, err
	}
	from := max(size-int64(s.max), 0)
	t.cut = from > 0
	_, err = io.Copy(t, io.NewSectionReader(s.f, from, size-from))
	return t, err
}
