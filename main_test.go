package main

import "testing"

// pcd sets the runtime's soft memory limit, unless GOMEMLIMIT sets one.
func TestMemoryLimit(t *testing.T) {
	if got := memoryLimit(""); got != softMemoryLimit {
		t.Fatalf("no GOMEMLIMIT: limit %d, want %d", got, softMemoryLimit)
	}
	if got := memoryLimit("1GiB"); got != -1 {
		t.Fatalf("GOMEMLIMIT=1GiB: limit %d, want the runtime's own (-1)", got)
	}
}
