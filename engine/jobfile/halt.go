package jobfile

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Halt is when a job stops early, as GNU parallel's --halt: after Count
// tasks (or Percent of the job's tasks) failed, succeeded or ended. Now
// stops the running tasks at once; soon lets them finish and starts no
// new one. Either way the tasks left are cancelled, and the job callback
// says why.
type Halt struct {
	Now     bool
	On      string  // "fail", "success" or "done"
	Count   int64   // a number of tasks, or
	Percent float64 // a share of the job's tasks, 0 < Percent <= 100
}

// ParseHalt reads --halt: never (or 0), when,why=N, when,why=N%, and
// parallel's old forms 1 (soon,fail=1), 2 (now,fail=1), -1
// (soon,success=1) and -2 (now,success=1). The zero Halt never halts.
func ParseHalt(s string) (Halt, error) {
	switch strings.TrimSpace(s) {
	case "", "never", "0":
		return Halt{}, nil
	case "1":
		return Halt{On: "fail", Count: 1}, nil
	case "2":
		return Halt{Now: true, On: "fail", Count: 1}, nil
	case "-1":
		return Halt{On: "success", Count: 1}, nil
	case "-2":
		return Halt{Now: true, On: "success", Count: 1}, nil
	}
	bad := fmt.Errorf("--halt %q: want never, or now|soon,fail|success|done=N or =N%%, as in GNU parallel (say now,fail=1)", s)
	when, why, ok := strings.Cut(s, ",")
	if !ok || (when != "now" && when != "soon") {
		return Halt{}, bad
	}
	on, n, ok := strings.Cut(why, "=")
	if !ok || (on != "fail" && on != "success" && on != "done") {
		return Halt{}, bad
	}
	h := Halt{Now: when == "now", On: on}
	if pct, isPct := strings.CutSuffix(n, "%"); isPct {
		p, err := strconv.ParseFloat(pct, 64)
		if err != nil || p <= 0 || p > 100 || math.IsNaN(p) {
			return Halt{}, bad
		}
		h.Percent = p
		return h, nil
	}
	c, err := strconv.ParseInt(n, 10, 64)
	if err != nil || c < 1 {
		return Halt{}, bad
	}
	h.Count = c
	return h, nil
}

// Never says the policy never halts.
func (h Halt) Never() bool { return h.On == "" }

func (h Halt) String() string {
	if h.Never() {
		return "never"
	}
	when := "soon"
	if h.Now {
		when = "now"
	}
	if h.Percent > 0 {
		return fmt.Sprintf("%s,%s=%g%%", when, h.On, h.Percent)
	}
	return fmt.Sprintf("%s,%s=%d", when, h.On, h.Count)
}

// Reached says whether a job of total tasks, with these counts, halts,
// and why.
func (h Halt) Reached(total, succeeded, failed int64) (string, bool) {
	if h.Never() {
		return "", false
	}
	var n int64
	what := map[string]string{"fail": "failed", "success": "succeeded", "done": "ended"}[h.On]
	switch h.On {
	case "fail":
		n = failed
	case "success":
		n = succeeded
	default:
		n = failed + succeeded
	}
	need := h.Count
	if h.Percent > 0 {
		need = max(int64(math.Ceil(h.Percent*float64(total)/100)), 1)
	}
	if n < need {
		return "", false
	}
	return fmt.Sprintf("halted (--halt %s): %d %s %s", h, n, pluralTasks(n), what), true
}

func pluralTasks(n int64) string {
	if n == 1 {
		return "task"
	}
	return "tasks"
}
