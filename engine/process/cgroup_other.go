//go:build !linux

package process

import "errors"

var errNoCgroups = errors.New("limits need Linux's cgroups")

// CheckLimits: limits need Linux.
func CheckLimits(Limits) error { return errNoCgroups }

// RemoveCgroups does nothing outside Linux.
func RemoveCgroups() {}

// Cgroup is a task's cgroup: Linux only.
type Cgroup struct{}

// NewCgroup fails outside Linux.
func NewCgroup(*Cgroup, string, Limits) (*Cgroup, error) { return nil, errNoCgroups }

// NewGroupCgroup fails outside Linux.
func NewGroupCgroup(string, Limits) (*Cgroup, error) { return nil, errNoCgroups }

func (*Cgroup) SetLimits(Limits) error { return errNoCgroups }
func (*Cgroup) Limits() Limits         { return Limits{} }
func (*Cgroup) Usage() CgroupUsage     { return CgroupUsage{} }
func (*Cgroup) Remove()                {}
