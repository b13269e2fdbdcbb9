package bench

import "testing"

func TestBenchTargetMet(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		target string
		v      float64
		want   string
	}{
		{"<= 10 for 10000", 9.5, "yes"}, {"<= 10", 10.5, "no"}, {">= 150000", 160000, "yes"}, {">= 150000", 140000, "no"},
		{"< 1", 1, "no"}, {"<= 1.10, big <= 64 MiB", 1.05, "yes"}, {">= 10x River, 25 workers", 5, "-"}, {"report", 3, "-"},
	} {
		if got := (benchRow{Target: c.target, Values: []float64{c.v}}).met(); got != c.want {
			t.Errorf("%q at %v: %s, want %s", c.target, c.v, got, c.want)
		}
	}
}
