package engine

import (
	"strings"
	"testing"
	"time"

	"github.com/pcd-dev/pcd/store"
)

// On a shared database a claim is what the idle workers can start, or
// claimAhead of work at the rate the workers do them, within its
// bounds in tasks and bytes; and a runner claims only when it needs to.
func TestClaimSize(t *testing.T) {
	tasks := func(n, payload int) []store.Task {
		out := make([]store.Task, n)
		for i := range out {
			out[i].Payload = []byte(strings.Repeat("x", payload))
		}
		return out
	}
	c := &jobController{workers: 25}
	queue := make(chan store.Task, 100)
	p := &producer{c: c, queue: queue, claims: true}
	// size is the claim after one of lastClaimed tasks of payload bytes
	// each, in a window of ago in which the workers were done with
	// resolved tasks.
	size := func(idle, lastClaimed, payload, resolved int, ago time.Duration) int {
		t.Helper()
		c.inHand.Store(int64(25 - idle))
		p.claimed(tasks(lastClaimed, payload))
		p.rate = 0
		p.windowStart, p.windowResolved = time.Now().Add(-ago), c.doneN.Load()
		c.doneN.Add(int64(resolved))
		p.claimSize()
		return p.page
	}
	// The first claim: one task per idle worker.
	c.inHand.Store(0)
	if p.claimSize(); p.page != 25 {
		t.Errorf("first claim, 25 idle workers: %d, want 25", p.page)
	}
	// A window too short to measure a rate in: what the idle workers can
	// start.
	if n := size(3, 25, 10, 20, time.Millisecond); n != 3 {
		t.Errorf("no rate yet, 3 idle: %d, want 3", n)
	}
	// Slow tasks: 25 done in a second. The claim is what the idle
	// workers can start, not more.
	if n := size(25, 25, 10, 25, time.Second); n != 25 {
		t.Errorf("one-second tasks: %d, want 25", n)
	}
	// Tasks of 200 ms: 125 done a second. Still what the free workers
	// can start.
	if n := size(5, 25, 10, 12, rateWindow); n != 5 {
		t.Errorf("200 ms tasks, 5 free: %d, want 5", n)
	}
	// Fast tasks: 250 done in 100 ms is 2,500/s (10 ms each, 25
	// workers), and a claim of claimAhead of it is 2,500 tasks.
	if n := size(25, 25, 10, 250, rateWindow); n < 2000 || n > 2600 {
		t.Errorf("fast tasks: %d, want about 2,500", n)
	}
	// Faster yet: no more than maxClaim.
	if n := size(25, 4000, 10, 100_000, rateWindow); n != maxClaim {
		t.Errorf("very fast tasks: %d, want %d", n, maxClaim)
	}
	// Large payloads: no more than maxClaimBytes.
	if n := size(25, 100, maxClaimBytes/100, 100_000, rateWindow); n != 100 {
		t.Errorf("fast tasks of %d bytes each: %d, want 100", maxClaimBytes/100, n)
	}
	// Every worker has a task, queued or running: no claim; a worker
	// free of them: a claim.
	p.rate = 25
	for range 60 {
		queue <- store.Task{}
	}
	c.inHand.Store(25)
	if p.hungry() {
		t.Errorf("hungry with a task in hand for every worker, at 25 tasks/s")
	}
	c.inHand.Store(24)
	if !p.hungry() {
		t.Errorf("not hungry with a worker free")
	}
	// Fast tasks: a queue half empty claims before the workers run dry.
	c.inHand.Store(25)
	p.rate = 25_000
	if p.hungry() {
		t.Errorf("hungry with 60 tasks of 100 queued at 25k tasks/s")
	}
	for range 20 {
		<-queue
	}
	if !p.hungry() {
		t.Errorf("not hungry with 40 tasks of 100 queued at 25k tasks/s")
	}
}
