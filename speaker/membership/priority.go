package membership

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Nice is the nice value speakers run with (see RaisePriority): a weight about nine times a
// normal process's under the kernel's fair scheduler, without real-time scheduling's risk of
// starving the node.
const Nice = -10

// RaisePriority gives every thread of this process the nice value nice (negative is more CPU):
// heartbeats must go out every Interval even when the node's CPUs are saturated, or a busy node is
// declared dead (corosync and keepalived run with raised priority for the same reason). Linux keeps
// nice per thread and new threads inherit it from the one that creates them, so it is set on each
// existing thread. Needs CAP_SYS_NICE to lower the value below the current one.
func RaisePriority(nice int) error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.Setpriority(unix.PRIO_PROCESS, tid, nice); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// RealtimePriority is the SCHED_FIFO priority of the heartbeat thread (1-99; any real-time
// priority runs before every normal task, a low one leaves room for the kernel's own threads).
const RealtimePriority = 10

// makeThreadRealtime puts the calling OS thread (which must stay locked to its goroutine) in the
// SCHED_FIFO class. Why: a nice value only orders threads within their scheduling group. Under
// autogroup (each session a group) or a container's cgroup, the speaker's whole group shares the
// CPU with every other group, and a cgroup CPU limit stops it outright until the next quota period
// (100 ms): a live, healthy speaker then misses heartbeats and its peers take its IPs. A
// real-time thread runs as soon as it wakes, whatever the groups, weights and quotas of normal
// tasks. It is safe because the thread does little (a few sends, receives and HMACs per interval,
// well under 1 % of a CPU for 100 peers) and blocks in between; the kernel's real-time throttling
// (95 % per second by default) bounds it anyway. SCHED_FLAG_RESET_ON_FORK keeps any thread or
// process created from it out of the real-time class. Needs CAP_SYS_NICE.
func makeThreadRealtime() error {
	return unix.SchedSetAttr(0, &unix.SchedAttr{
		Size:     unix.SizeofSchedAttr,
		Policy:   unix.SCHED_FIFO,
		Flags:    unix.SCHED_FLAG_RESET_ON_FORK,
		Priority: RealtimePriority,
	}, 0)
}

// makeThreadNormal returns the calling thread to the normal class, keeping its nice value. The
// runtime ends a thread whose goroutine exits locked to it, except the process's main thread,
// which it parks for good instead.
func makeThreadNormal() error {
	nice, err := unix.Getpriority(unix.PRIO_PROCESS, 0)
	if err != nil {
		return err
	}
	// getpriority returns 20 - nice (never negative); sched_setattr takes the nice value.
	return unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_NORMAL, Nice: int32(20 - nice)}, 0)
}

// realtimeDenied says why sched_setattr refused the real-time class (err), for the log: on cgroup v1
// with real-time group scheduling (CONFIG_RT_GROUP_SCHED), a thread may enter the class only when
// its cpu cgroup has a real-time budget, and new cgroups (every container's, as the kubelet and
// runc make them) get none: cpu.rt_runtime_us is 0, and CAP_SYS_NICE does not help. Otherwise
// EPERM means CAP_SYS_NICE is missing.
func realtimeDenied(err error) string {
	if !errors.Is(err, unix.EPERM) {
		return "sched_setattr failed"
	}
	if b, rerr := os.ReadFile(cgroupV1CPUFile("cpu.rt_runtime_us")); rerr == nil && strings.TrimSpace(string(b)) == "0" {
		return "this process's cpu cgroup has no real-time budget (cgroup v1 with real-time group scheduling: cpu.rt_runtime_us is 0, as for every container); CAP_SYS_NICE cannot lift that"
	}
	return "needs CAP_SYS_NICE"
}

// cgroupV1CPUFile is a file of this process's cgroup v1 cpu controller: a container sees its own
// cgroup at /sys/fs/cgroup/cpu; elsewhere /proc/self/cgroup names the path under it.
func cgroupV1CPUFile(name string) string {
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			// hierarchy-ID:controller-list:path
			f := strings.SplitN(line, ":", 3)
			if len(f) == 3 && slices.Contains(strings.Split(f[1], ","), "cpu") {
				if p := filepath.Join("/sys/fs/cgroup/cpu", f[2], name); fileExists(p) {
					return p
				}
			}
		}
	}
	return filepath.Join("/sys/fs/cgroup/cpu", name)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
