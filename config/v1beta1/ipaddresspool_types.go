package v1beta1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// IPAddressPool is a set of addresses the controller gives to Services of type LoadBalancer.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=ippool;ippools
// +kubebuilder:printcolumn:name="Addresses",type=string,JSONPath=`.spec.addresses`
// +kubebuilder:printcolumn:name="Auto",type=boolean,JSONPath=`.spec.autoAssign`
// +kubebuilder:printcolumn:name="IPv4 Used",type=string,JSONPath=`.status.ipv4.inUse`
// +kubebuilder:printcolumn:name="IPv4 Free",type=string,JSONPath=`.status.ipv4.free`
// +kubebuilder:printcolumn:name="IPv6 Used",type=string,JSONPath=`.status.ipv6.inUse`
// +kubebuilder:printcolumn:name="IPv6 Free",type=string,JSONPath=`.status.ipv6.free`
// +kubebuilder:printcolumn:name="Overlap",type=string,JSONPath=`.status.conditions[?(@.type=="Overlap")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type IPAddressPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   IPAddressPoolSpec   `json:"spec"`
	Status IPAddressPoolStatus `json:"status,omitempty"`
}

// IPAddressPoolSpec says which addresses a pool holds and which Services may take them.
type IPAddressPoolSpec struct {
	// Addresses are CIDRs ("192.0.2.0/28", "2001:db8::/120") or inclusive ranges
	// ("192.0.2.10-192.0.2.20"), IPv4 and IPv6 mixed freely.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	Addresses []AddressBlock `json:"addresses"`

	// AutoAssign lets the controller give addresses from this pool to Services that did not ask for
	// it by name. False keeps the pool for Services that name it (annotation herald.io/address-pool)
	// or request one of its addresses.
	// +kubebuilder:default=true
	// +optional
	AutoAssign *bool `json:"autoAssign,omitempty"`

	// AvoidBuggyIPs skips addresses ending in .0 and .255, which some old client stacks drop.
	// +optional
	AvoidBuggyIPs bool `json:"avoidBuggyIPs,omitempty"`

	// AllowCrossNamespaceSharing lets Services in different namespaces share an address of this pool
	// (same herald.io/allow-shared-ip key). By default only Services of one namespace can share.
	// +optional
	AllowCrossNamespaceSharing bool `json:"allowCrossNamespaceSharing,omitempty"`

	// ServiceAllocation restricts the pool to some Services and orders it against other pools.
	// +optional
	ServiceAllocation *ServiceAllocation `json:"serviceAllocation,omitempty"`
}

// ServiceAllocation restricts a pool to some Services; unset fields do not restrict.
type ServiceAllocation struct {
	// Priority orders pools a Service may use: the lowest number is tried first; pools without a
	// priority come after all pools with one.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Priority int32 `json:"priority,omitempty"`

	// Namespaces whose Services may use the pool.
	// +kubebuilder:validation:MaxItems=256
	// +optional
	Namespaces []string `json:"namespaces,omitempty"`

	// NamespaceSelectors select, by label, namespaces whose Services may use the pool.
	// +optional
	NamespaceSelectors []metav1.LabelSelector `json:"namespaceSelectors,omitempty"`

	// ServiceSelectors select, by label, Services that may use the pool.
	// +optional
	ServiceSelectors []metav1.LabelSelector `json:"serviceSelectors,omitempty"`
}

// IPAddressPoolStatus is written by the controller.
type IPAddressPoolStatus struct {
	// IPv4 counts this pool's IPv4 addresses; absent when it has none.
	// +optional
	IPv4 *AddressCounts `json:"ipv4,omitempty"`
	// IPv6 counts this pool's IPv6 addresses; absent when it has none.
	// +optional
	IPv6 *AddressCounts `json:"ipv6,omitempty"`

	// Conditions: Valid, Overlap (addresses another, older pool holds; they are not given out from
	// this pool), NotSupported.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// AddressBlock is a CIDR or an inclusive range of addresses of one family.
// +kubebuilder:validation:MaxLength=96
// +kubebuilder:validation:XValidation:rule="isCIDR(self) || (self.split('-').size() == 2 && isIP(self.split('-')[0].trim()) && isIP(self.split('-')[1].trim()) && ip(self.split('-')[0].trim()).family() == ip(self.split('-')[1].trim()).family())",message="must be a CIDR (192.0.2.0/24, 2001:db8::/64) or a range of one family (192.0.2.10-192.0.2.20)"
type AddressBlock string

// AddressCounts are decimal strings, because an IPv6 /64 holds more addresses than an int64 counts.
type AddressCounts struct {
	Total string `json:"total"`
	InUse string `json:"inUse"`
	Free  string `json:"free"`
}

// IPAddressPoolList is a list of IPAddressPools.
//
// +kubebuilder:object:root=true
type IPAddressPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPAddressPool `json:"items"`
}
