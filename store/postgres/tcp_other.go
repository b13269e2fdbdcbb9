//go:build !linux

package postgres

import "time"

// setTCPUserTimeout does nothing where TCP_USER_TIMEOUT is not known; the
// keepalives still find a dead peer.
func setTCPUserTimeout(uintptr, time.Duration) error { return nil }
