package jobfile

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/pcd-dev/pcd/internal/strictjson"
)

// Limits are what one command may use, where the runner can enforce them
// (a cgroup per task). A job's limits are its exec tasks' unless a task
// sets its own.
type Limits struct {
	// Memory is the most memory, in bytes, the command and everything it
	// starts may use together, swap included. Over it, the kernel kills
	// one of them, and the task fails.
	Memory ByteSize `json:"memory,omitempty"`
	// CPUs is how many CPUs' worth of time they may use (1.5: one and a
	// half), however many threads they run.
	CPUs float64 `json:"cpus,omitempty"`
}

// Bounds of a limit: less memory than MinMemory cannot start a program,
// and the kernel's CFS quota is at least a hundredth of a CPU.
const (
	MinMemory = 1 << 20
	MinCPUs   = 0.01
	MaxCPUs   = 4096
)

// IsZero reports no limit.
func (l Limits) IsZero() bool { return l.Memory == 0 && l.CPUs == 0 }

// Validate checks the limits' bounds.
func (l Limits) Validate() error {
	if l.Memory != 0 && l.Memory < MinMemory {
		return fmt.Errorf("memory must be at least 1 MiB, got %v", l.Memory)
	}
	if l.CPUs != 0 && (l.CPUs < MinCPUs || l.CPUs > MaxCPUs || math.IsNaN(l.CPUs)) {
		return fmt.Errorf("cpus must be between %v and %v, got %v", MinCPUs, MaxCPUs, l.CPUs)
	}
	return nil
}

// Over fills what l leaves unset from def.
func (l Limits) Over(def Limits) Limits {
	if l.Memory == 0 {
		l.Memory = def.Memory
	}
	if l.CPUs == 0 {
		l.CPUs = def.CPUs
	}
	return l
}

// ByteSize is a number of bytes. It reads a JSON number of bytes, or a
// string with a unit: "512MiB", "512M", "1.5G", "64k". Every unit is a
// power of 1024, as in docker and systemd: K and KiB are both 1024 bytes.
type ByteSize int64

// ParseByteSize reads "512MiB", "2G", "1048576".
func ParseByteSize(s string) (ByteSize, error) {
	num := strings.TrimSpace(s)
	i := strings.IndexFunc(num, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	unit := ""
	if i >= 0 {
		num, unit = strings.TrimSpace(num[:i]), strings.TrimSpace(num[i:])
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || num == "" {
		return 0, fmt.Errorf("not a size such as 512MiB or 2G: %q", s)
	}
	shift := map[string]uint{"": 0, "b": 0,
		"k": 10, "kb": 10, "kib": 10,
		"m": 20, "mb": 20, "mib": 20,
		"g": 30, "gb": 30, "gib": 30,
		"t": 40, "tb": 40, "tib": 40}
	n, ok := shift[strings.ToLower(unit)]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q (want K, M, G or T, as powers of 1024)", s, unit)
	}
	v *= float64(uint64(1) << n)
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return ByteSize(v), nil
}

// UnmarshalJSON reads 536870912 or "512MiB".
func (b *ByteSize) UnmarshalJSON(data []byte) error {
	var n float64
	if err := json.Unmarshal(data, &n); err == nil {
		if n < 0 || n >= math.MaxInt64 {
			return fmt.Errorf("size must be between 0 and %d bytes, got %v", int64(math.MaxInt64), n)
		}
		*b = ByteSize(n)
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("size must be bytes or a string such as \"512MiB\", got %s", strictjson.Excerpt(data))
	}
	v, err := ParseByteSize(s)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// MarshalJSON writes a whole number of the largest unit that divides
// the size exactly, "512MiB", or bytes.
func (b ByteSize) MarshalJSON() ([]byte, error) {
	for _, u := range []struct {
		shift uint
		name  string
	}{{40, "TiB"}, {30, "GiB"}, {20, "MiB"}, {10, "KiB"}} {
		if b > 0 && b%(1<<u.shift) == 0 {
			return json.Marshal(strconv.FormatInt(int64(b>>u.shift), 10) + u.name)
		}
	}
	return json.Marshal(int64(b))
}

// String is the size in the largest binary unit that keeps it short:
// "512 MiB", "1.5 GiB", "100 bytes".
func (b ByteSize) String() string {
	units := []string{"KiB", "MiB", "GiB", "TiB"}
	if b < 1024 {
		return strconv.FormatInt(int64(b), 10) + " bytes"
	}
	v, u := float64(b)/1024, 0
	for v >= 1024 && u < len(units)-1 {
		v /= 1024
		u++
	}
	return strconv.FormatFloat(math.Round(v*10)/10, 'f', -1, 64) + " " + units[u]
}
