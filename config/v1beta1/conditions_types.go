package v1beta1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// ConditionsStatus is the status of the objects whose only state is what the controller found in
// their spec (advertisements, BGP peers, BFD profiles): conditions, documented on each kind.
type ConditionsStatus struct {
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}
