package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/store"
)

// TestProgressOfThirtyTasks: a job of exactly the bar's width in tasks
// gets a bar with its total, not a spinner.
func TestProgressOfThirtyTasks(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	p := newProgress(&b, false)
	p.jobs([]store.Job{{Total: 30}})
	for range 3 {
		p.event(engine.Event{Task: &engine.TaskEvent{State: store.Succeeded}})
	}
	p.bar.RenderBlank()
	defer p.finish()
	if out := b.String(); !strings.Contains(out, "/30,") {
		t.Errorf("the bar of a 30-task job shows no total: %q", out)
	}
}
