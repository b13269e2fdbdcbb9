// Package e2e holds pcd's end-to-end tests: they build the binary and
// drive it as a user would, with processes, signals, SIGKILL, a second
// uid, a browser and both databases. The crash suite (crash_test.go), the
// fault injections (faults_test.go), the PostgreSQL chaos run and the
// side-by-side tests with GNU parallel and xargs live here too.
//
// Most tests run pcd built with the race detector. The crash suites and
// the tests that push tens of thousands of tasks run it built without
// (usePlainBinary): the binary users run reaches more kill points in the
// same time, and the rest of the suite keeps the race checks.
//
//	go test -race ./e2e
//	PCD_SOAK=10m go test -race -run RandomKills -v -timeout 40m ./e2e
//	PCD_CHAOS=10m go test -count=1 -v -timeout 40m -run TestPostgresChaos ./e2e
package e2e
