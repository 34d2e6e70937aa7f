package bgpconfig

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/heraldlb/herald/config/v1beta1"
)

// Selection is what an L2 or BGP advertisement selects: pools, by name, and Services, by label.
// The speakers' BGP translation and the controller's herald.io/Announced condition both read
// advertisements through Select, so they agree on what an advertisement covers.
type Selection struct {
	Pools map[string]bool
	// Services are ORed; none selects every Service.
	Services []labels.Selector
}

// Selects reports whether the selection covers the addresses of pool given to a Service with
// these labels.
func (s Selection) Selects(pool string, serviceLabels map[string]string) bool {
	if !s.Pools[pool] {
		return false
	}
	if len(s.Services) == 0 {
		return true
	}
	for _, sel := range s.Services {
		if sel.Matches(labels.Set(serviceLabels)) {
			return true
		}
	}
	return false
}

// SelectionProblem says why an advertisement selects nothing at all.
type SelectionProblem struct {
	Reason  string // ReasonUnknownPool or ReasonInvalidSelector
	Message string
}

// Select reads what an advertisement selects among pools (by name): the pools it names or selects
// by label (neither given: every pool), and its Service selectors. A pool it names that does not
// exist, or a selector that does not parse (node selectors included), makes the whole
// advertisement unusable: the problem says which.
func Select(s v1beta1.AdvertisementSelection, pools map[string]v1beta1.IPAddressPool) (Selection, *SelectionProblem) {
	bad := func(reason, format string, args ...any) (Selection, *SelectionProblem) {
		return Selection{}, &SelectionProblem{Reason: reason, Message: fmt.Sprintf(format, args...)}
	}
	sel := Selection{Pools: map[string]bool{}}
	for _, pool := range s.IPAddressPools {
		if _, ok := pools[pool]; !ok {
			return bad(ReasonUnknownPool, "ipAddressPools names %q, which does not exist: create the pool or fix the name", pool)
		}
		sel.Pools[pool] = true
	}
	for _, ls := range s.IPAddressPoolSelectors {
		ps, err := metav1.LabelSelectorAsSelector(&ls)
		if err != nil {
			return bad(ReasonInvalidSelector, "ipAddressPoolSelectors: %v", err)
		}
		for pool, p := range pools {
			if ps.Matches(labels.Set(p.Labels)) {
				sel.Pools[pool] = true
			}
		}
	}
	if len(s.IPAddressPools) == 0 && len(s.IPAddressPoolSelectors) == 0 {
		for pool := range pools {
			sel.Pools[pool] = true
		}
	}
	for _, ls := range s.ServiceSelectors {
		ss, err := metav1.LabelSelectorAsSelector(&ls)
		if err != nil {
			return bad(ReasonInvalidSelector, "serviceSelectors: %v", err)
		}
		sel.Services = append(sel.Services, ss)
	}
	for _, ls := range s.NodeSelectors {
		if _, err := metav1.LabelSelectorAsSelector(&ls); err != nil {
			return bad(ReasonInvalidSelector, "nodeSelectors: %v", err)
		}
	}
	return sel, nil
}
