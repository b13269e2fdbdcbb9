// Package sink delivers callbacks to their sinks: command hooks (on each
// task's or job's callback) and webhooks, a daemon's own and each job's.
// Each sink has one goroutine, which delivers its callbacks in id order
// after they commit, retries with backoff (Policy), and records each
// delivery and the sink's cursor in the database, so that delivery is at
// least once across restarts, with the callback id for receivers to drop
// duplicates. A slow or failing sink holds up only itself. On a database
// several runners share, one runner at a time delivers a sink (a lease).
//
// The engine gives it the callbacks decoded (Config.Decode) and runs the
// hook commands as it runs any command (Options.RunHook).
package sink
