package jobfile

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestByteSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want ByteSize
		err  string
	}{
		{`536870912`, 512 << 20, ""},
		{`"512MiB"`, 512 << 20, ""},
		{`"512M"`, 512 << 20, ""},
		{`"512mb"`, 512 << 20, ""},
		{`"1.5G"`, 3 << 29, ""},
		{`"64k"`, 64 << 10, ""},
		{`" 2 GiB "`, 2 << 30, ""},
		{`"100"`, 100, ""},
		{`"12Q"`, 0, `unknown unit "Q"`},
		{`"MiB"`, 0, "not a size"},
		{`"-5M"`, 0, "not a size"},
		{`-1`, 0, "between 0 and"},
		{`"9999999T"`, 0, "too large"},
		{`true`, 0, "bytes or a string"},
	} {
		var b ByteSize
		err := json.Unmarshal([]byte(c.in), &b)
		switch {
		case c.err == "" && (err != nil || b != c.want):
			t.Errorf("%s: %v, %v; want %d", c.in, b, err, c.want)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: %v; want an error with %q", c.in, err, c.err)
		}
	}
	for _, c := range []struct {
		b          ByteSize
		json, text string
	}{
		{512 << 20, `"512MiB"`, "512 MiB"},
		{3 << 29, `"1536MiB"`, "1.5 GiB"},
		{1000, `1000`, "1000 bytes"},
		{2 << 40, `"2TiB"`, "2 TiB"},
	} {
		out, err := json.Marshal(c.b)
		if err != nil || string(out) != c.json || c.b.String() != c.text {
			t.Errorf("%d: %s %v %q; want %s %q", c.b, out, err, c.b.String(), c.json, c.text)
		}
		var back ByteSize
		if err := json.Unmarshal(out, &back); err != nil || back != c.b {
			t.Errorf("%s read back as %d, %v", out, back, err)
		}
	}
}

// TestJobLimitsReachItsExecTasks: a job's limits become those of each
// exec task that sets none; a task's own stay.
func TestJobLimitsReachItsExecTasks(t *testing.T) {
	def := TaskDefaults{Limits: Limits{Memory: 64 << 20, CPUs: 2}}
	own := TaskSpec{Kind: "exec", Payload: json.RawMessage(`{"argv": ["true"], "memory": "1GiB"}`)}.NewTask(def)
	p, err := ParseExec(own.Payload)
	if err != nil || p.Memory != 1<<30 || p.CPUs != 2 {
		t.Errorf("own limit: %s: %v", own.Payload, err)
	}
	inherited := TaskSpec{Kind: "exec", Payload: json.RawMessage(`{"shell": "true"}`)}.NewTask(def)
	if p, err := ParseExec(inherited.Payload); err != nil || p.Memory != 64<<20 || p.CPUs != 2 {
		t.Errorf("the job's limits: %s: %v", inherited.Payload, err)
	}
	if _, err := ParseExec(json.RawMessage(`{"argv": ["true"], "cpus": 0.001}`)); err == nil || !strings.Contains(err.Error(), "cpus must be between") {
		t.Errorf("cpus 0.001: %v", err)
	}
}
