package membership

import (
	"errors"
	"os"
	"strconv"

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
