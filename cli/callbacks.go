package cli

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/store"
)

type deliveryView struct {
	CallbackID  int64      `json:"callback_id"`
	Event       string     `json:"event"`
	Number      int64      `json:"number,omitempty"`
	Sink        string     `json:"sink"`
	State       string     `json:"state"`
	Attempts    int        `json:"attempts,omitempty"` // not counted for the runner
	DeliveredAt *time.Time `json:"delivered_at,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
}

func callbacksCommand(env Env) *cli.Command {
	return &cli.Command{
		Name:      "callbacks",
		Usage:     "show the delivery state of a job's callbacks",
		ArgsUsage: "JOB_ID",
		Description: `Lists each callback record of the job with its delivery state at each sink:
"runner" is the log or output of the process that ran the job; hooks and
webhooks are named by their command or URL. A state is pending (not tried
yet), retrying, delivered, or dead (given up after --delivery-attempts).`,
		Flags:        []cli.Flag{jsonFlag()},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			return withJob(c, false, func(db *client, j store.Job) error {
				views, err := deliveryViews(c, db, j)
				if err != nil {
					return err
				}
				return printDeliveries(c, env, views)
			})
		},
	}
}

// deliveryViews are a job's callbacks with their state at each sink,
// those not tried yet included.
func deliveryViews(c *cli.Context, db *client, j store.Job) ([]deliveryView, error) {
	rows, err := db.Deliveries(c.Context, j)
	if err != nil {
		return nil, err
	}
	sinks, err := sinksFor(c, db, j)
	if err != nil {
		return nil, err
	}
	var views []deliveryView
	last := int64(0)
	tried := map[string]bool{} // sinks with a row for the current callback
	pending := func(id int64, event string, seq int64) {
		// Sinks that take the callback and have not tried it.
		for _, s := range sinks {
			if !tried[s.name] && id > s.cursor && (s.event == "" || s.event == event) {
				views = append(views, deliveryView{CallbackID: id, Event: event, Number: seq,
					Sink: strings.TrimPrefix(s.name, "job "+j.UUID+" "), State: "pending"})
			}
		}
	}
	for i, r := range rows {
		if r.ID != last {
			clear(tried)
			// The runner's own delivery: its log or output. It keeps a
			// cursor, not a time or count per callback.
			v := deliveryView{CallbackID: r.ID, Event: r.Event, Number: r.TaskSeq, Sink: "runner", State: "pending"}
			if r.Released {
				v.State = "delivered"
			}
			views = append(views, v)
			last = r.ID
		}
		lastOfCallback := i+1 == len(rows) || rows[i+1].ID != r.ID
		if r.Sink != "" {
			tried[r.Sink] = true
			sink := strings.TrimPrefix(r.Sink, "job "+j.UUID+" ")
			v := deliveryView{CallbackID: r.ID, Event: r.Event, Number: r.TaskSeq, Sink: sink, State: string(r.State), Attempts: r.Attempts, LastError: r.LastError}
			if !r.DeliveredAt.IsZero() {
				t := r.DeliveredAt
				v.DeliveredAt = &t
			}
			views = append(views, v)
		}
		if lastOfCallback {
			pending(r.ID, r.Event, r.TaskSeq)
		}
	}
	return views, nil
}

// printDeliveries prints the views, as NDJSON with --json.
func printDeliveries(c *cli.Context, env Env, views []deliveryView) error {
	if c.Bool("json") {
		enc := json.NewEncoder(env.Stdout)
		for _, v := range views {
			if err := enc.Encode(v); err != nil {
				return err
			}
		}
		return nil
	}
	out := make([][]string, 0, len(views))
	for _, v := range views {
		task, at, attempts := "-", "-", "-"
		if v.Attempts > 0 {
			attempts = fmt.Sprint(v.Attempts)
		}
		if v.Number > 0 {
			task = fmt.Sprint(v.Number)
		}
		if v.DeliveredAt != nil {
			at = ago(*v.DeliveredAt)
		}
		sink := printable(v.Sink)
		if len(sink) > 60 {
			sink = sink[:57] + "..."
		}
		out = append(out, []string{fmt.Sprint(v.CallbackID), v.Event, task, sink, v.State, attempts, at, oneLine(v.LastError)})
	}
	return table(env.Stdout, "ID\tEVENT\tTASK\tSINK\tSTATE\tATTEMPTS\tDELIVERED\tLAST_ERROR", out)
}

// sinkState is a sink that a job's callbacks go to, and how far it is.
type sinkState struct {
	name   string
	event  string // "" for every event
	cursor int64
}

// sinksFor lists the sinks of a job's callbacks: its own, and the
// daemon's that the database knows of.
func sinksFor(c *cli.Context, db *client, j store.Job) ([]sinkState, error) {
	cursors, err := db.SinkCursors(c.Context)
	if err != nil {
		return nil, err
	}
	own, err := engine.SinkNames(j)
	if err != nil {
		return nil, err
	}
	var out []sinkState
	for name, event := range own {
		out = append(out, sinkState{name: name, event: event, cursor: cursors[name]})
	}
	for name, cursor := range cursors {
		if event, ok := engine.DaemonSinkEvent(name); ok {
			out = append(out, sinkState{name: name, event: event, cursor: cursor})
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].name < out[b].name })
	return out, nil
}
