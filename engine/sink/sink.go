package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pcd-dev/pcd/engine/process"
	"github.com/pcd-dev/pcd/store"
)

// destination is a sink: a command hook or a webhook.
type destination interface {
	// Name identifies the sink; its delivery progress is kept under it.
	Name() string
	// Wants says whether the sink takes this callback.
	Wants(Callback) bool
	// Deliver delivers one callback.
	Deliver(ctx context.Context, c Callback) error
}

// Callback is a callback as a sink delivers it: its JSON, and what hooks
// and webhooks tell beside it.
type Callback struct {
	ID     int64  // the callback's id, stable across deliveries
	Type   string // store.EventTask or store.EventJob
	JobID  string // the job's uuid
	TaskID string // the task's uuid, for a task callback
	State  string // the task's state, or the job's outcome
	Body   []byte // the callback's JSON
}

// Hook is a hook command to run for a callback (Options.RunHook).
type Hook struct {
	Shell   string // the command, run by the shell
	Dir     string // where it runs; the runner's directory when empty
	Stdin   []byte // the callback's JSON
	Env     map[string]string
	Timeout time.Duration
}

// Sinks are the callback destinations of a job, or of a daemon: command
// hooks for task and job events, and webhooks for both.
type Sinks struct {
	OnTask   string   `json:"on_task,omitempty"`
	OnJob    string   `json:"on_job,omitempty"`
	Webhooks []string `json:"webhooks,omitempty"`
	// Dir is where hook commands run: the submitter's directory for a
	// job's own hooks; the runner's when empty.
	Dir string `json:"hooks_dir,omitempty"`
}

// Empty reports whether there is no sink.
func (s Sinks) Empty() bool { return s.OnTask == "" && s.OnJob == "" && len(s.Webhooks) == 0 }

// Encode is the sinks as stored with a job; nil for none.
func (s Sinks) Encode() []byte {
	if s.Empty() {
		return nil
	}
	b, _ := json.Marshal(s)
	return b
}

// Validate checks that hook commands exist and webhook URLs are HTTP.
func (s Sinks) Validate() error {
	for _, h := range []struct{ flag, cmd string }{{"on_task", s.OnTask}, {"on_job", s.OnJob}} {
		if h.cmd == "" {
			continue
		}
		fields := strings.Fields(h.cmd)
		if len(fields) == 0 {
			return fmt.Errorf("%s: empty command", h.flag)
		}
		if err := process.CheckCommand(fields[0], ""); err != nil {
			return fmt.Errorf("%s hook: %w", h.flag, err)
		}
	}
	for _, raw := range s.Webhooks {
		if err := checkWebhookURL(raw); err != nil {
			return err
		}
	}
	return nil
}

func checkWebhookURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("webhook %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("webhook %q: the scheme must be http or https", raw)
	}
	if u.Host == "" {
		return fmt.Errorf("webhook %q: no host", raw)
	}
	return nil
}

// Options tune hooks and webhooks.
type Options struct {
	HookTimeout    time.Duration // default 30s
	WebhookTimeout time.Duration // default 10s
	Client         *http.Client  // default a client with WebhookTimeout
	// RunHook runs a hook command, as the runner runs commands (engine
	// sets it): an error is a failed delivery, retried.
	RunHook func(ctx context.Context, h Hook) error
}

// build makes the sinks. scope prefixes their names: "job <uuid>" for a
// job's own, "daemon" for the daemon's. A daemon's hooks are named by
// their role alone, so that a changed command is the same sink and
// replays nothing; a job's hooks never change.
func (s Sinks) build(scope string, o Options) []destination {
	if o.HookTimeout <= 0 {
		o.HookTimeout = 30 * time.Second
	}
	if o.WebhookTimeout <= 0 {
		o.WebhookTimeout = 10 * time.Second
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: o.WebhookTimeout}
	}
	hookName := func(role, cmd string) string {
		if scope == daemonScope {
			return scope + " " + role
		}
		return scope + " " + role + " " + cmd
	}
	var out []destination
	if s.OnTask != "" {
		out = append(out, hookSink{name: hookName("on-task", s.OnTask), event: store.EventTask, cmd: s.OnTask, dir: s.Dir, timeout: o.HookTimeout, run: o.RunHook})
	}
	if s.OnJob != "" {
		out = append(out, hookSink{name: hookName("on-job", s.OnJob), event: store.EventJob, cmd: s.OnJob, dir: s.Dir, timeout: o.HookTimeout, run: o.RunHook})
	}
	for _, u := range s.Webhooks {
		out = append(out, webhookSink{name: scope + " webhook " + u, url: u, client: o.Client})
	}
	return out
}

// daemonScope names the daemon's own sinks.
const daemonScope = "daemon"

// Names lists the names under which a job's own sinks keep their
// delivery progress, with the event each takes ("" for every event).
func Names(job store.Job) (map[string]string, error) {
	out := map[string]string{}
	if len(job.Sinks) == 0 {
		return out, nil
	}
	var s Sinks
	if err := json.Unmarshal(job.Sinks, &s); err != nil {
		return nil, fmt.Errorf("sinks of job %s: %w", job.UUID, err)
	}
	for _, sink := range s.build("job "+job.UUID, Options{}) {
		switch k := sink.(type) {
		case hookSink:
			out[k.name] = k.event
		default:
			out[sink.Name()] = ""
		}
	}
	return out, nil
}

// DaemonEvent tells, from a daemon sink's name, which event it takes
// ("" for every event), and whether the name is a daemon sink's at all.
func DaemonEvent(name string) (event string, ok bool) {
	switch {
	case name == daemonScope+" on-task":
		return store.EventTask, true
	case name == daemonScope+" on-job":
		return store.EventJob, true
	case strings.HasPrefix(name, daemonScope+" webhook "):
		return "", true
	}
	return "", false
}

// hookSink runs a command with the event as JSON on stdin and in
// PCD_* environment variables. Nothing is templated into the command.
type hookSink struct {
	name, event, cmd, dir string
	timeout               time.Duration
	run                   func(context.Context, Hook) error
}

func (h hookSink) Name() string          { return h.name }
func (h hookSink) Wants(c Callback) bool { return c.Type == h.event }

func (h hookSink) Deliver(ctx context.Context, c Callback) error {
	if h.run == nil {
		return errors.New("hook: no hook runner")
	}
	env := map[string]string{
		"PCD_EVENT":       c.Type,
		"PCD_JOB_ID":      c.JobID,
		"PCD_CALLBACK_ID": strconv.FormatInt(c.ID, 10),
		"PCD_TASK_ID":     c.TaskID,
		"PCD_STATE":       c.State,
	}
	return h.run(ctx, Hook{Shell: h.cmd, Dir: h.dir, Stdin: c.Body, Env: env, Timeout: h.timeout})
}

// webhookSink POSTs the event as JSON with an Idempotency-Key header: the
// callback's id, the same at every attempt.
type webhookSink struct {
	name, url string
	client    *http.Client
}

func (w webhookSink) Name() string      { return w.name }
func (webhookSink) Wants(Callback) bool { return true }

func (w webhookSink) Deliver(ctx context.Context, c Callback) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(c.Body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", strconv.FormatInt(c.ID, 10))
	req.Header.Set("User-Agent", "pcd")
	req.Header.Set("X-PCD-Event", c.Type)
	resp, err := w.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			return fmt.Errorf("POST: %w", ue.Err)
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	return fmt.Errorf("HTTP %s: %s", resp.Status, strings.TrimSpace(string(snippet)))
}

// Pending counts the callbacks of a job that its own sinks have
// not delivered (nor given up on) yet.
func Pending(ctx context.Context, db store.Store, job store.Job) (int, error) {
	names, err := Names(job)
	if err != nil || len(names) == 0 {
		return 0, err
	}
	n := 0
	for name, event := range names {
		cursor, err := db.SinkCursor(ctx, name)
		if err != nil {
			return 0, err
		}
		left, err := db.CountCallbacks(ctx, job.ID, cursor, event)
		if err != nil {
			return 0, err
		}
		n += int(left)
	}
	return n, nil
}

// Backlog counts the callbacks that each sink has not delivered (nor
// given up on) yet. The daemon's sinks count as themselves; the sinks of
// jobs are summed by what they are across jobs ("webhook URL", "on-task
// CMD"). Sinks with nothing pending are left out.
func Backlog(ctx context.Context, db store.Store) (map[string]int64, error) {
	cursors, err := db.SinkCursors(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for name, cursor := range cursors {
		event, ok := DaemonEvent(name)
		if !ok {
			continue
		}
		n, err := db.CountCallbacks(ctx, 0, cursor, event)
		if err != nil {
			return nil, err
		}
		if n > 0 {
			out[name] += n
		}
	}
	jobs, err := db.JobsWithSinks(ctx, time.Time{})
	if err != nil {
		return nil, err
	}
	for _, job := range jobs {
		names, err := Names(job)
		if err != nil {
			return nil, err
		}
		for name, event := range names {
			n, err := db.CountCallbacks(ctx, job.ID, cursors[name], event)
			if err != nil {
				return nil, err
			}
			if n > 0 {
				out[Kind(name)] += n
			}
		}
	}
	return out, nil
}

// Kind is a sink's name without its job: "job <uuid> webhook URL" is
// "webhook URL", so that the sinks of many jobs add up. The daemon's own
// sinks keep their names.
func Kind(name string) string {
	rest, ok := strings.CutPrefix(name, "job ")
	if !ok {
		return name
	}
	if _, kind, ok := strings.Cut(rest, " "); ok {
		return kind
	}
	return name
}
