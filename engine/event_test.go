package engine

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/pcd-dev/pcd/store"
)

// TestCallbackJSONIsMarshalJSON: pcd watch --json passes records on
// without decoding them; it must print what decoding and encoding would.
func TestCallbackJSONIsMarshalJSON(t *testing.T) {
	for _, ev := range []Event{
		{Type: store.EventTask, JobID: "j", Task: &TaskEvent{ID: "t", Number: 7, Kind: "exec", State: store.Failed,
			TimeSecs: 0.25, Attempts: 2, Result: json.RawMessage(`{"exit_code":3}`), Error: "exit status 3"}},
		{Type: store.EventJob, JobID: "j", Job: &JobEvent{Name: "n", Outcome: store.Succeeded, ElapsedSecs: 1.5, Total: 3, Succeeded: 3}},
	} {
		msg, err := ev.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		cb := store.Callback{ID: 42, Message: msg}
		got, err := CallbackJSON(nil, cb)
		if err != nil {
			t.Fatal(err)
		}
		decoded, err := EventFromCallback(cb)
		if err != nil {
			t.Fatal(err)
		}
		want, err := decoded.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("CallbackJSON\n%s\nwant\n%s", got, want)
		}
	}
	if _, err := CallbackJSON(nil, store.Callback{ID: 1, Message: []byte(`[1]`)}); err == nil {
		t.Error("a message that is not an object was passed on")
	}
}
