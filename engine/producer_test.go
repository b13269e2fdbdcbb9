package engine

import (
	"strings"
	"testing"
	"time"

	"github.com/pcd-dev/pcd/store"
)

// A claim grows while its tasks enter the queue fast, up to its bounds in
// tasks and bytes, and shrinks when they are slow.
func TestClaimSize(t *testing.T) {
	page := func(n, payload int) []store.Task {
		tasks := make([]store.Task, n)
		for i := range tasks {
			tasks[i].Payload = []byte(strings.Repeat("x", payload))
		}
		return tasks
	}
	p := &producer{page: minClaim, minPage: minClaim, maxPage: maxClaim}
	var sizes []int
	for range 7 {
		p.sized(page(p.page, 10), time.Millisecond)
		sizes = append(sizes, p.page)
	}
	want := []int{500, 1000, 2000, 4000, maxClaim, maxClaim, maxClaim}
	for i := range want {
		if sizes[i] != want[i] {
			t.Fatalf("fast pages: sizes %v, want %v", sizes, want)
		}
	}
	// A short page (the job's end) says nothing of the speed.
	p.sized(page(10, 10), 5*time.Second)
	if p.page != maxClaim {
		t.Fatalf("after a short page: %d, want %d", p.page, maxClaim)
	}
	p.sized(page(p.page, 10), 5*time.Second)
	if p.page != maxClaim/2 {
		t.Fatalf("after a slow page: %d, want %d", p.page, maxClaim/2)
	}
	for range 10 {
		p.sized(page(p.page, 10), 5*time.Second)
	}
	if p.page != minClaim {
		t.Fatalf("after slow pages: %d, want %d", p.page, minClaim)
	}
	// Large payloads: the page stops growing at maxClaimBytes.
	p.sized(page(p.page, maxClaimBytes/minClaim), time.Millisecond)
	if p.page != minClaim {
		t.Fatalf("a page of %d bytes grew to %d", maxClaimBytes, p.page)
	}
	// Between the two bounds of speed, the size stays.
	p.sized(page(p.page, 10), 200*time.Millisecond)
	if p.page != minClaim {
		t.Fatalf("a page of moderate speed changed the size to %d", p.page)
	}
	// A database of one runner reads fixed pages.
	fixed := &producer{page: minPage, minPage: minPage, maxPage: minPage}
	fixed.sized(page(minPage, 10), time.Microsecond)
	if fixed.page != minPage {
		t.Fatalf("fixed page changed to %d", fixed.page)
	}
}
