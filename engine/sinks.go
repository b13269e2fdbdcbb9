package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/pcd-dev/pcd/engine/sink"
	"github.com/pcd-dev/pcd/store"
)

// The callback sinks (hooks and webhooks) are package engine/sink; these
// are its names as the engine's API gives them.
type (
	// Sinks are the callback destinations of a job, or of a daemon.
	Sinks = sink.Sinks
	// SinkOptions tune hooks and webhooks.
	SinkOptions = sink.Options
	// DeliveryPolicy is how deliveries retry.
	DeliveryPolicy = sink.Policy
	// DeliveryConfig sets a runner's own sinks and how deliveries retry.
	DeliveryConfig = sink.Config
)

// SinkNames lists the names under which a job's own sinks keep their
// delivery progress, with the event each takes ("" for every event).
func SinkNames(job store.Job) (map[string]string, error) { return sink.Names(job) }

// DaemonSinkEvent tells, from a daemon sink's name, which event it takes
// ("" for every event), and whether the name is a daemon sink's at all.
func DaemonSinkEvent(name string) (event string, ok bool) { return sink.DaemonEvent(name) }

// SinkKind is the kind of a sink, from its name: hook or webhook.
func SinkKind(name string) string { return sink.Kind(name) }

// withHooks is the delivery config with what the engine gives the sinks:
// callbacks decoded as events, and hooks run as exec tasks.
func withHooks(cfg DeliveryConfig) DeliveryConfig {
	if cfg.Decode == nil {
		cfg.Decode = decodeCallback
	}
	if cfg.Options.RunHook == nil {
		cfg.Options.RunHook = runHook
	}
	return cfg
}

// decodeCallback is a callback record as a sink delivers it.
func decodeCallback(cb store.Callback) (sink.Callback, error) {
	ev, err := EventFromCallback(cb)
	if err != nil {
		return sink.Callback{}, err
	}
	body, err := ev.MarshalJSON()
	if err != nil {
		return sink.Callback{}, err
	}
	c := sink.Callback{ID: ev.CallbackID, Type: ev.Type, JobID: ev.JobID, Body: body}
	switch {
	case ev.Task != nil:
		c.TaskID, c.State = ev.Task.ID, string(ev.Task.State)
	case ev.Job != nil:
		c.State = string(ev.Job.Outcome)
	}
	return c, nil
}

// runHook runs a hook command as an exec task, with the callback on its
// stdin and in PCD_* environment variables; nothing is templated into
// the command.
func runHook(ctx context.Context, h sink.Hook) error {
	payload, err := json.Marshal(ExecPayload{Shell: h.Shell, Dir: h.Dir, Stdin: string(h.Stdin), Env: h.Env, Timeout: Duration(h.Timeout)})
	if err != nil {
		return err
	}
	out, err := Exec{OutputCap: 2048, KillGrace: time.Second}.Run(ctx, Task{Payload: payload})
	if err != nil {
		var res ExecResult
		if json.Unmarshal(out, &res) == nil {
			if last := lastLine(res.Stderr); last != "" {
				return fmt.Errorf("hook %s: %s", err, last)
			}
		}
		return fmt.Errorf("hook %w", err)
	}
	return nil
}

// lastLine is the last line of s, at most 200 bytes of it.
func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
