//go:build !linux

package process

import "errors"

const keeperEnv = "PCD_KEEPER_OF"

// Contain needs Linux's PID namespaces.
func Contain() (stop func(), err error) {
	return nil, errors.New("PID namespaces are Linux's")
}

func runKeeper() {}

// ContainVar set to "off" keeps commands in the runner's own namespaces.
const ContainVar = "PCD_CONTAIN"

// RunInUserNamespace is Linux's: elsewhere the caller goes on.
func RunInUserNamespace() (code int, ran bool) { return 0, false }
