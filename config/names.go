// Package config holds the names Herald's parts share with users: Service annotations (with the
// MetalLB aliases Herald reads so users can migrate without touching their Services), status
// condition types and reasons, finalizers and labels. The API types are in config/v1beta1 and the
// generated CRDs in config/crd.
package config

// Annotations read from Services.
const (
	// AnnotationAddressPool names the IPAddressPool a Service takes its IPs from.
	AnnotationAddressPool = "herald.io/address-pool"
	// AnnotationLoadBalancerIPs requests IPs: a comma list, at most one per family.
	AnnotationLoadBalancerIPs = "herald.io/loadBalancerIPs"
	// AnnotationAllowSharedIP is a sharing key: Services with the same key may share an IP.
	AnnotationAllowSharedIP = "herald.io/allow-shared-ip"
	// AnnotationIPVSScheduler picks the IPVS scheduler (rr, wrr, lc, wlc, dh, sh, sed, nq, mh).
	AnnotationIPVSScheduler = "herald.io/ipvs-scheduler"
	// AnnotationProxyMode "userspace" puts the Service's TCP traffic through the speaker's
	// userspace proxy (dataplane/userspace), which retries a new connection on another endpoint
	// when the one it picked refuses, resets or does not answer. Absent or "kernel": the node's
	// kernel backend (nftables or IPVS) forwards it.
	AnnotationProxyMode = "herald.io/proxy-mode"
	// AnnotationUserspaceConnectTries bounds the endpoints the userspace proxy tries per new
	// connection (default 3) before it resets the client.
	AnnotationUserspaceConnectTries = "herald.io/userspace-connect-tries"
	// AnnotationUserspaceProxyProtocol "v2" makes the userspace proxy open every backend
	// connection with a PROXY protocol v2 header carrying the client's address; the backend
	// must expect it. The proxy's only way to pass the client address through.
	AnnotationUserspaceProxyProtocol = "herald.io/userspace-proxy-protocol"
)

// Values of herald.io/proxy-mode.
const (
	ProxyModeKernel    = "kernel"
	ProxyModeUserspace = "userspace"
)

// annotationAliases lists, for each Herald annotation, the MetalLB names read in its place.
var annotationAliases = map[string][]string{
	AnnotationAddressPool:     {"metallb.io/address-pool", "metallb.universe.tf/address-pool"},
	AnnotationLoadBalancerIPs: {"metallb.io/loadBalancerIPs", "metallb.universe.tf/loadBalancerIPs"},
	AnnotationAllowSharedIP:   {"metallb.io/allow-shared-ip", "metallb.universe.tf/allow-shared-ip"},
}

// Annotation returns the value of a Herald annotation, falling back to its MetalLB aliases; a
// Herald annotation wins when both are set. The second result names the key the value came from,
// so messages can quote what the user wrote; it is empty when none is set.
func Annotation(annotations map[string]string, name string) (value, key string) {
	if v, ok := annotations[name]; ok {
		return v, name
	}
	for _, alias := range annotationAliases[name] {
		if v, ok := annotations[alias]; ok {
			return v, alias
		}
	}
	return "", ""
}

// Overridden lists the keys of a Herald annotation's MetalLB aliases that are set to another value
// than the one Annotation returns: precedence made Herald ignore what they ask for, which the
// user must be told (see ReasonConflictingRequests).
func Overridden(annotations map[string]string, name string) []string {
	value, used := Annotation(annotations, name)
	if used == "" {
		return nil
	}
	var ignored []string
	for _, key := range append([]string{name}, annotationAliases[name]...) {
		if v, ok := annotations[key]; ok && key != used && v != value {
			ignored = append(ignored, key)
		}
	}
	return ignored
}

// AliasedAnnotations are the Herald annotations with MetalLB aliases, in a fixed order.
var AliasedAnnotations = []string{AnnotationAddressPool, AnnotationLoadBalancerIPs, AnnotationAllowSharedIP}

// Service condition types, in status.conditions, written in the same patch as
// status.loadBalancer.
const (
	ConditionAllocated = "herald.io/Allocated"
	ConditionAnnounced = "herald.io/Announced"
	// ConditionAnnotationsValid is False when a Herald annotation that does not affect allocation
	// (herald.io/ipvs-scheduler) has a value Herald cannot use, or when two annotations (or an
	// annotation and spec.loadBalancerIP) ask for different things and precedence picked one. It is
	// written only once something was wrong (then True when fixed), so valid Services carry no
	// extra condition.
	ConditionAnnotationsValid = "herald.io/AnnotationsValid"
)

// Reasons of the herald.io/AnnotationsValid condition.
const (
	ReasonAnnotationsValid  = "AnnotationsValid"
	ReasonInvalidAnnotation = "InvalidAnnotation"
	// ReasonConflictingRequests: a Herald annotation and its MetalLB alias, the two MetalLB forms,
	// or herald.io/loadBalancerIPs and spec.loadBalancerIP ask for different values; the message
	// says which one is used and which is ignored. The Service is served with the one used.
	ReasonConflictingRequests = "ConflictingRequests"
)

// Reasons of the herald.io/Allocated condition.
const (
	ReasonAllocated              = "Allocated"
	ReasonNoPool                 = "NoPool"
	ReasonPoolExhausted          = "PoolExhausted"
	ReasonRequestedIPUnavailable = "RequestedIPUnavailable"
	ReasonRequestedIPOutside     = "RequestedIPOutsidePools"
	ReasonSharingConflict        = "SharingConflict"
	ReasonInvalidRequest         = "InvalidRequest"
	ReasonFamilyUnavailable      = "FamilyUnavailable"
	ReasonPoolRemoved            = "PoolRemoved"
)

// Reasons of the herald.io/Announced condition.
const (
	ReasonAnnounced        = "Announced"
	ReasonNoEligibleNode   = "NoEligibleNode"
	ReasonNoLocalEndpoints = "NoLocalEndpoints"
	ReasonNoBGPSession     = "NoBGPSession"
	ReasonNoAdvertisement  = "NoAdvertisement"
)

// Condition types on Herald's own objects.
const (
	// ConditionValid is False when an object refers to something missing or malformed; the message
	// says what and how to fix it.
	ConditionValid = "Valid"
	// ConditionOverlap is True on a pool holding addresses an older pool also holds.
	ConditionOverlap = "Overlap"
	// ConditionNotSupported is True when an object sets a field Herald accepts (for migration from
	// MetalLB) but does not implement yet; the message names the fields.
	ConditionNotSupported = "NotSupported"
)

// Reasons of the conditions on Herald's own objects. A False Valid or a True NotSupported on a
// BGP object takes the reason of its first problem (config/bgpconfig's Reason* constants).
const (
	ReasonValid     = "Valid"
	ReasonInvalid   = "Invalid" // a pool whose addresses or selectors do not parse
	ReasonOverlap   = "Overlap"
	ReasonNoOverlap = "NoOverlap"
	ReasonSupported = "Supported"
)

// Finalizers and labels.
const (
	// FinalizerPoolInUse keeps a pool while Services still hold its addresses.
	FinalizerPoolInUse = "herald.io/pool-in-use"
	// LabelExcludeFromLB is the well-known label that keeps a node from announcing.
	LabelExcludeFromLB = "node.kubernetes.io/exclude-from-external-load-balancers"
)

// Speaker liveness: each speaker renews a coordination.k8s.io/v1 Lease named SpeakerLeasePrefix +
// its node, in Herald's namespace, labelled LabelSpeakerLease (so the controller and heraldctl
// watch or list those alone, not the leader-election Lease beside them). Its SpeakerStatus then
// carries the same label and is rewritten only when its content changes; a SpeakerStatus without
// the label is an older speaker's, alive while its lastUpdate is recent.
const (
	SpeakerLeasePrefix = "herald-speaker-"
	LabelSpeakerLease  = "herald.io/speaker-lease"
	// SpeakerLeaseDuration and SpeakerLeaseRenew are the kubelet's node-lease timings: renewed
	// every quarter of its duration, so three renewals can fail before it expires.
	SpeakerLeaseDuration = 40 // seconds
	SpeakerLeaseRenew    = 10 // seconds
)

// SpeakerLeaseName is the name of node's speaker Lease.
func SpeakerLeaseName(node string) string { return SpeakerLeasePrefix + node }

// DefaultLoadBalancerClass is the spec.loadBalancerClass Herald handles by default.
const DefaultLoadBalancerClass = "herald.io/lb"
