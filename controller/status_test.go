package controller

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/config"
)

// TestAnnotationsConditionNamesConflicts: requests that precedence resolves (aliases, the spec
// field) get AnnotationsValid False with reason ConflictingRequests naming what is used and what
// ignored; agreeing requests get nothing; an invalid annotation keeps its own reason.
func TestAnnotationsConditionNamesConflicts(t *testing.T) {
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		specIP      string
		reason      string   // "" when no condition is wanted
		mentions    []string // in the message
	}{
		{name: "nothing set"},
		{name: "agreeing alias", annotations: map[string]string{config.AnnotationAddressPool: "a", "metallb.io/address-pool": "a"}},
		{name: "spec IP among the annotation's", annotations: map[string]string{config.AnnotationLoadBalancerIPs: "10.0.0.1, 2001:db8::1"},
			specIP: "2001:DB8:0::1"},
		{name: "spec IP alone", specIP: "10.0.0.1"},
		{
			name:        "pool alias differs",
			annotations: map[string]string{config.AnnotationAddressPool: "a", "metallb.universe.tf/address-pool": "b"},
			reason:      config.ReasonConflictingRequests,
			mentions:    []string{`metallb.universe.tf/address-pool="b" is ignored`, `herald.io/address-pool="a" takes precedence`},
		},
		{
			name:        "sharing key: metallb.io over metallb.universe.tf",
			annotations: map[string]string{"metallb.io/allow-shared-ip": "k1", "metallb.universe.tf/allow-shared-ip": "k2"},
			reason:      config.ReasonConflictingRequests,
			mentions:    []string{`metallb.universe.tf/allow-shared-ip="k2" is ignored`, `metallb.io/allow-shared-ip="k1" takes precedence`},
		},
		{
			name:        "annotation IPs over spec.loadBalancerIP",
			annotations: map[string]string{"metallb.io/loadBalancerIPs": "10.0.0.1"},
			specIP:      "10.0.0.2",
			reason:      config.ReasonConflictingRequests,
			mentions:    []string{`spec.loadBalancerIP "10.0.0.2" is ignored`, `metallb.io/loadBalancerIPs="10.0.0.1" takes precedence`},
		},
		{
			name:        "an invalid annotation keeps its reason",
			annotations: map[string]string{config.AnnotationIPVSScheduler: "nope", config.AnnotationAddressPool: "a", "metallb.io/address-pool": "b"},
			reason:      config.ReasonInvalidAnnotation,
			mentions:    []string{"herald.io/ipvs-scheduler", `metallb.io/address-pool="b" is ignored`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Annotations: tc.annotations}, Spec: corev1.ServiceSpec{LoadBalancerIP: tc.specIP}}
			c := annotationsCondition(svc)
			if tc.reason == "" {
				if c != nil {
					t.Errorf("got %+v, want no condition", c)
				}
				return
			}
			if c == nil || c.Status != metav1.ConditionFalse || c.Reason != tc.reason {
				t.Fatalf("got %+v, want False with reason %s", c, tc.reason)
			}
			for _, m := range tc.mentions {
				if !strings.Contains(c.Message, m) {
					t.Errorf("message %q does not say %q", c.Message, m)
				}
			}
		})
	}
}
