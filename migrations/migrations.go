// Package migrations holds pcd's schema as numbered SQL files.
//
// A file is named NNNN_name.sql. The store applies them in order, each in
// its own transaction that also records its version, so a database is
// always at exactly one known version. Never edit a file that has shipped:
// add a new one.
package migrations

import "embed"

// FS holds the migration files.
//
//go:embed *.sql
var FS embed.FS
