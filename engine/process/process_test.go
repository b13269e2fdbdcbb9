package process

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestTaskOfCookie(t *testing.T) {
	for cookie, want := range map[string]string{
		"0190a1b2-0000-7000-8000-000000000001.2": "0190a1b2-0000-7000-8000-000000000001",
		"hook.3":                                 "", "": "", "no-dot": "",
	} {
		if got := TaskOfCookie(cookie); got != want {
			t.Errorf("TaskOfCookie(%q) = %q, want %q", cookie, got, want)
		}
	}
}
