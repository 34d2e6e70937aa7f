package ipvs

import (
	"fmt"
	"slices"
	"strings"
)

// Schedulers are the IPVS schedulers a Service may pick with the herald.io/ipvs-scheduler annotation.
var Schedulers = []string{"rr", "wrr", "lc", "wlc", "dh", "sh", "sed", "nq", "mh"}

// DefaultScheduler is used when the annotation is absent or invalid.
const DefaultScheduler = "rr"

// ParseScheduler validates an annotation value. An empty value is the default; an invalid one
// returns DefaultScheduler together with an error meant for the Service's condition and event.
func ParseScheduler(value string) (string, error) {
	v := strings.TrimSpace(value)
	if v == "" {
		return DefaultScheduler, nil
	}
	if slices.Contains(Schedulers, v) {
		return v, nil
	}
	return DefaultScheduler, fmt.Errorf("unknown IPVS scheduler %q (want one of %s); using %s",
		value, strings.Join(Schedulers, ", "), DefaultScheduler)
}
