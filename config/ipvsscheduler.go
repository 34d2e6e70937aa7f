package config

import (
	"fmt"
	"slices"
	"strings"
)

// IPVSSchedulers are the values of the herald.io/ipvs-scheduler annotation.
var IPVSSchedulers = []string{"rr", "wrr", "lc", "wlc", "dh", "sh", "sed", "nq", "mh"}

// DefaultIPVSScheduler is used when the annotation is absent or invalid.
const DefaultIPVSScheduler = "rr"

// ParseIPVSScheduler validates a herald.io/ipvs-scheduler value. An empty value is the default; an
// invalid one returns DefaultIPVSScheduler with an error that says what to write instead. The
// controller reports the error on the Service; the IPVS backend just falls back, so a typo never
// leaves a Service without a virtual server.
func ParseIPVSScheduler(value string) (string, error) {
	v := strings.TrimSpace(value)
	if v == "" {
		return DefaultIPVSScheduler, nil
	}
	if slices.Contains(IPVSSchedulers, v) {
		return v, nil
	}
	return DefaultIPVSScheduler, fmt.Errorf("unknown IPVS scheduler %q: use one of %s (the IPVS data plane uses %s meanwhile)",
		value, strings.Join(IPVSSchedulers, ", "), DefaultIPVSScheduler)
}
