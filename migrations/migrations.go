// Package migrations holds pcd's schemas as numbered SQL files, one
// directory per database.
//
// A file is named NNNN_name.sql. A store applies them in order, each in
// its own transaction that also records its version, so a database is
// always at exactly one known version. Never edit a file that has shipped:
// add a new one.
package migrations

import (
	"embed"
	"io/fs"
)

//go:embed sqlite/*.sql
var files embed.FS

// SQLite holds the SQLite store's migrations.
var SQLite = sub("sqlite")

func sub(dir string) fs.FS {
	f, err := fs.Sub(files, dir)
	if err != nil {
		panic(err) // dir is a literal above
	}
	return f
}
