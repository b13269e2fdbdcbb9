// Package sqlite is pcd's embedded store: a store.Store on one SQLite file
// (modernc.org/sqlite, no cgo).
//
// DB has one writer connection, so every write is serialised; each write
// transaction begins IMMEDIATE, and a writer polls for the write lock so
// that it gets in between the chunks of a big submit. A small read-only
// pool serves queries, and Options.ReadOnly opens for reading only. The
// runner lock (<db>.lock), the submit lock (<db>.submit) and the wake-up
// socket (in a runtime directory private to the user) are files beside
// the database or in that directory; every one of them is refused if
// another local user could control it (store.ErrUnsafe).
//
// Open checks the file (a quick check, deferred past DefaultFullCheckMax
// to DB.Check), migrates it with the files in migrations/sqlite, and
// starts a checkpointer that keeps the WAL bounded.
package sqlite
