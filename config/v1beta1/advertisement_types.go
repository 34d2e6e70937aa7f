package v1beta1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// AdvertisementSelection says which addresses an advertisement covers and which nodes announce
// them. L2 and BGP advertisements select the same way. An empty list does not restrict: no pools
// and no pool selectors means every pool.
type AdvertisementSelection struct {
	// IPAddressPools names the pools whose addresses are announced.
	// +kubebuilder:validation:MaxItems=256
	// +optional
	IPAddressPools []string `json:"ipAddressPools,omitempty"`

	// IPAddressPoolSelectors select pools by label.
	// +optional
	IPAddressPoolSelectors []metav1.LabelSelector `json:"ipAddressPoolSelectors,omitempty"`

	// NodeSelectors select the nodes that may announce.
	// +optional
	NodeSelectors []metav1.LabelSelector `json:"nodeSelectors,omitempty"`

	// ServiceSelectors select, by label, the Services announced.
	// +optional
	ServiceSelectors []metav1.LabelSelector `json:"serviceSelectors,omitempty"`
}

// L2Advertisement announces pools' addresses with ARP (IPv4) and NDP (IPv6): one node at a time
// answers for each address, and another takes over within a second when it fails.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=l2adv
// +kubebuilder:printcolumn:name="Pools",type=string,JSONPath=`.spec.ipAddressPools`
// +kubebuilder:printcolumn:name="Interfaces",type=string,JSONPath=`.spec.interfaces`
// +kubebuilder:printcolumn:name="Valid",type=string,JSONPath=`.status.conditions[?(@.type=="Valid")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type L2Advertisement struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec L2AdvertisementSpec `json:"spec,omitempty"`
	// Status is written by the controller: Valid (False names an unknown pool and how to fix it).
	Status ConditionsStatus `json:"status,omitempty"`
}

// L2AdvertisementSpec selects what is announced over L2, where and by whom.
type L2AdvertisementSpec struct {
	AdvertisementSelection `json:",inline"`

	// Interfaces the speaker answers on. By default: the interface whose subnet holds the address.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=15
	// +optional
	Interfaces []string `json:"interfaces,omitempty"`

	// PreferredNodeSelectors is MetalLB's hint for choosing the announcing node. Accepted for
	// migration, not implemented yet: the object gets a NotSupported condition.
	// +optional
	PreferredNodeSelectors []PreferredNodeSelector `json:"preferredNodeSelectors,omitempty"`
}

// PreferredNodeSelector weighs nodes matching Preference.
type PreferredNodeSelector struct {
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	Weight     int32                `json:"weight"`
	Preference metav1.LabelSelector `json:"preference"`
}

// L2AdvertisementList is a list of L2Advertisements.
//
// +kubebuilder:object:root=true
type L2AdvertisementList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []L2Advertisement `json:"items"`
}

// BGPAdvertisement announces pools' addresses to BGP peers.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=bgpadv
// +kubebuilder:printcolumn:name="Pools",type=string,JSONPath=`.spec.ipAddressPools`
// +kubebuilder:printcolumn:name="Peers",type=string,JSONPath=`.spec.peers`
// +kubebuilder:printcolumn:name="Valid",type=string,JSONPath=`.status.conditions[?(@.type=="Valid")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BGPAdvertisement struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec BGPAdvertisementSpec `json:"spec,omitempty"`
	// Status is written by the controller: Valid (False names an unknown pool, peer or community
	// and how to fix it), NotSupported.
	Status ConditionsStatus `json:"status,omitempty"`
}

// BGPAdvertisementSpec selects what is advertised, to which peers, from which nodes, and how.
type BGPAdvertisementSpec struct {
	AdvertisementSelection `json:",inline"`

	// AggregationLength is the prefix length IPv4 addresses are advertised with (32: each address
	// alone). Shorter lengths aggregate neighbouring Service addresses into one route.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=32
	// +optional
	AggregationLength *int32 `json:"aggregationLength,omitempty"`

	// AggregationLengthV6 is the same for IPv6 (default 128).
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=128
	// +optional
	AggregationLengthV6 *int32 `json:"aggregationLengthV6,omitempty"`

	// LocalPref is the BGP LOCAL_PREF attribute, sent to iBGP peers only.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4294967295
	// +optional
	LocalPref *int64 `json:"localPref,omitempty"`

	// Communities attached to the routes: standard ("65535:65282"), large ("large:1:2:3"), or the
	// name of an alias defined in a Community object.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=128
	// +optional
	Communities []string `json:"communities,omitempty"`

	// Peers limits the advertisement to these BGPPeers (by name). Empty: every peer.
	// +kubebuilder:validation:MaxItems=256
	// +optional
	Peers []string `json:"peers,omitempty"`
}

// BGPAdvertisementList is a list of BGPAdvertisements.
//
// +kubebuilder:object:root=true
type BGPAdvertisementList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPAdvertisement `json:"items"`
}
