// Package buildinfo says which pcd this is: its module version and the
// VCS revision it was built from.
package buildinfo

import (
	"runtime/debug"
	"strings"
)

// Version is the module version and the first 12 characters of the VCS
// revision, with +dirty for a modified tree: "v1.2.0 (0123456789ab)".
func Version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := info.Main.Version
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+dirty"
			}
		}
	}
	short := rev[:min(len(rev), 12)]
	switch {
	case rev == "":
	case strings.HasSuffix(v, "-"+short):
		// A pseudo-version names the revision already.
		v += modified
	default:
		v += " (" + short + modified + ")"
	}
	return v
}
