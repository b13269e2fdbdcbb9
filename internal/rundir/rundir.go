// Package rundir finds the directory where pcd keeps what belongs to this
// user on this host: the wake sockets of databases in shared directories,
// and the live output of running exec tasks. No other user can create
// files there, so none can squat a socket or plant an output file.
package rundir

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Private reports whether dir is this user's and no one else can write
// in it.
func Private(dir string) bool {
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Geteuid() && fi.Mode().Perm()&0o022 == 0
}

// Dir is $XDG_RUNTIME_DIR when it is private to this user, else
// $TMPDIR/pcd-<uid>, made 0700 if missing and checked each time: a
// directory of that name that another user made is refused.
func Dir() (string, error) {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" && filepath.IsAbs(d) && Private(d) {
		return d, nil
	}
	d := filepath.Join(os.TempDir(), fmt.Sprintf("pcd-%d", os.Geteuid()))
	if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("runtime directory: %w", err)
	}
	if err := ownedPrivate(d); err != nil {
		return "", err
	}
	return d, nil
}

// ownedPrivate checks that d is a directory of this user's that no one
// else can read or write.
func ownedPrivate(d string) error {
	fi, err := os.Lstat(d)
	if err != nil {
		return fmt.Errorf("runtime directory: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Geteuid() || fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("runtime directory %s is not a directory private to you (another user may have made it); remove it, or set XDG_RUNTIME_DIR", d)
	}
	return nil
}

// Key is a short name for a database in Dir: a hash of its path or URL,
// so that no secret in a URL shows in a file name.
func Key(db string) string {
	sum := sha256.Sum256([]byte(db))
	return fmt.Sprintf("pcd-%x", sum[:8])
}

// Sub is the directory name in Dir, made 0700 if missing, and checked.
func Sub(name string) (string, error) {
	d, err := Dir()
	if err != nil {
		return "", err
	}
	sub := filepath.Join(d, name)
	if err := os.Mkdir(sub, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("runtime directory: %w", err)
	}
	if err := ownedPrivate(sub); err != nil {
		return "", err
	}
	return sub, nil
}
