package jobfile

import (
	"fmt"
	"strings"
	"testing"

	"github.com/pcd-dev/pcd/internal/strictjson"
)

func TestStrictJSON(t *testing.T) {
	many := func(dup bool) string {
		var kv []string
		for i := range 100 {
			kv = append(kv, fmt.Sprintf(`"k%d":%d`, i, i))
		}
		if dup {
			kv = append(kv, `"k7":0`)
		}
		return `{"kind":"exec","payload":{"env":{` + strings.Join(kv, ",") + `}}}`
	}
	for _, c := range []struct {
		json string
		want string // a part of the error, or "" for none
	}{
		{`{"kind":"noop","payload":{"a":1,"b":[{"a":1},{"a":2}]}}`, ""},
		{`{"kind":"noop","kind":"exec"}`, `key "kind" is given twice`},
		{`{"kind":"noop","payload":{"a":1,"b":2,"a":3}}`, `key "a" is given twice`},
		{`{"kind":"noop","payload":{"a":1,"\u0061":3}}`, `key "a" is given twice`},
		{`{"KIND":"noop"}`, `names are case-sensitive: "kind"`},
		{`{"kind":"noop","payload":{"KIND":1}}`, ""}, // only the task's own names
		{`{"kind":"noop","payload":"a\"b:{\"kind\":1,\"kind\":2}"}`, ""},
		{`{"kind":"noop","max_attempts":2,"backoff":{"base":"1s","cap":"2s"}}`, ""},
		{`{"kind":"noop","workers":2}`, `unknown field "workers"`},
		{`{"kind":"noop","backoff":{"base":"1s","cpa":"2s"}}`, `unknown field "cpa"`},
		{`{"kind":"noop","backoff":{"Base":"1s"}}`, `unknown field "Base" (names are case-sensitive: "base")`},
		{`{"kind":"noop","timeout":"1s","payload":[{"x":{"y":1}}]}`, ""},
		{many(false), ""},
		{many(true), `key "k7" is given twice`},
		{"{\"kind\":\"no\xffop\"}", "not valid UTF-8 (at byte 11"},
	} {
		err := strictjson.Check([]byte(c.json), strictjson.For[TaskSpec]())
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%.60s: %v", c.json, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%.60s: %v, want an error with %q", c.json, err, c.want)
		}
	}
}

func BenchmarkStrictJSON(b *testing.B) {
	raw := []byte(`{"kind":"exec","payload":{"argv":["sh","-c","echo hello"],"env":{"A":"1","B":"2"}},"max_attempts":3}`)
	fields := strictjson.For[TaskSpec]()
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if err := strictjson.Check(raw, fields); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	var tasks []string
	for i := range 10000 {
		tasks = append(tasks, fmt.Sprintf(`{"kind":"noop","max_attempts":%d}`, i%3+1))
	}
	data := []byte(`{"workers":25,"tasks":[` + strings.Join(tasks, ",") + `]}`)
	reg := testKinds{}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(data, reg); err != nil {
			b.Fatal(err)
		}
	}
}
