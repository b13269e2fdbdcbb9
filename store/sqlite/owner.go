package sqlite

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"github.com/pcd-dev/pcd/store"
)

// checkOwnFile checks that path, if it exists, is a regular file of this
// user that no one else can write. A symlink is refused, unless
// followLink and the link itself is this user's; then its target is
// checked.
func checkOwnFile(path string, followLink bool) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		if !followLink {
			return fmt.Errorf("%w: %s is a symlink", store.ErrUnsafe, path)
		}
		if err := checkOwner(path, fi); err != nil {
			return err
		}
		if fi, err = os.Stat(path); err != nil {
			// A database is not created through a link to nowhere.
			target, _ := os.Readlink(path)
			return fmt.Errorf("%w: %s is a symlink to %s, which cannot be opened: %w", store.ErrBadPath, path, target, err)
		}
	}
	return checkOwnedInfo(path, fi)
}

// checkOwnedInfo checks an open or stat'ed file.
func checkOwnedInfo(path string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is not a regular file", store.ErrUnsafe, path)
	}
	if err := checkOwner(path, fi); err != nil {
		return err
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("%w: %s is writable by group or others (mode %04o); chmod go-w it if it is yours", store.ErrUnsafe, path, perm)
	}
	return nil
}

func checkOwner(path string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if uid := os.Geteuid(); int(st.Uid) != uid {
		return fmt.Errorf("%w: %s is owned by uid %d, not by you (uid %d)", store.ErrUnsafe, path, st.Uid, uid)
	}
	return nil
}

// checkDatabaseFiles checks the database file, SQLite's files beside it,
// and the runner lock, before anything is created or written.
func checkDatabaseFiles(path string) error {
	if err := checkOwnFile(path, true); err != nil {
		return err
	}
	for _, side := range []string{"-wal", "-shm", "-journal", ".lock", ".submit"} {
		if err := checkOwnFile(path+side, false); err != nil {
			return err
		}
	}
	return nil
}
