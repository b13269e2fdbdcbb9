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

//go:embed sqlite/*.sql postgres/*.sql
var files embed.FS

// SQLite and Postgres hold each store's migrations.
var (
	SQLite   = sub("sqlite")
	Postgres = sub("postgres")
)

func sub(dir string) fs.FS {
	f, err := fs.Sub(files, dir)
	if err != nil {
		panic(err) // dir is a literal above
	}
	return f
}
