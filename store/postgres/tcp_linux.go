package postgres

import (
	"time"

	"golang.org/x/sys/unix"
)

// setTCPUserTimeout fails the connection when data it sent stays
// unacknowledged for d.
func setTCPUserTimeout(fd uintptr, d time.Duration) error {
	return unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d.Milliseconds()))
}
