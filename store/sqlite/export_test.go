package sqlite

// CommitsWaiting is how many batches wait in the commit queue for the
// group commit in flight.
func (db *DB) CommitsWaiting() int {
	db.commits.mu.Lock()
	defer db.commits.mu.Unlock()
	return len(db.commits.waiting)
}
