// Package v1beta1 is Herald's API: group herald.io, version v1beta1. Every kind is cluster-scoped,
// because pools, peers and advertisements describe the cluster's network, not a tenant's.
//
// Per-object rules are in the CRD schema (OpenAPI + CEL), so Herald needs no admission webhook;
// rules that span objects (overlapping pools, unknown references) are answered by the controllers
// with conditions on the object.
//
// +kubebuilder:object:generate=true
// +groupName=herald.io
package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the API group and version of every kind in this package.
var GroupVersion = schema.GroupVersion{Group: "herald.io", Version: "v1beta1"}

var (
	schemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme registers this package's kinds with a scheme.
	AddToScheme = schemeBuilder.AddToScheme
)

func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(GroupVersion,
		&IPAddressPool{}, &IPAddressPoolList{},
		&L2Advertisement{}, &L2AdvertisementList{},
		&BGPAdvertisement{}, &BGPAdvertisementList{},
		&BGPPeer{}, &BGPPeerList{},
		&Community{}, &CommunityList{},
		&BFDProfile{}, &BFDProfileList{},
		&SpeakerStatus{}, &SpeakerStatusList{},
	)
	// The meta kinds (ListOptions, WatchEvent, …) are what clients need to list and watch.
	metav1.AddToGroupVersion(scheme, GroupVersion)
	return nil
}
