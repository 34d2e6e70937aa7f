package migrate

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// The spec types below mirror MetalLB's CRDs (metallb.io v1beta1, and v1beta2 for BGPPeer, as of
// MetalLB v0.15) field for field, so that a field this package does not know is found by strict
// decoding and reported instead of dropped. MetalLB's Go module is not imported: it would pull in
// its whole controller for a handful of structs.

type metallbPoolSpec struct {
	Addresses         []string                  `json:"addresses"`
	AutoAssign        *bool                     `json:"autoAssign,omitempty"`
	AvoidBuggyIPs     bool                      `json:"avoidBuggyIPs,omitempty"`
	ServiceAllocation *metallbServiceAllocation `json:"serviceAllocation,omitempty"`
}

type metallbServiceAllocation struct {
	Priority           int                    `json:"priority,omitempty"`
	Namespaces         []string               `json:"namespaces,omitempty"`
	NamespaceSelectors []metav1.LabelSelector `json:"namespaceSelectors,omitempty"`
	ServiceSelectors   []metav1.LabelSelector `json:"serviceSelectors,omitempty"`
}

type metallbL2AdvertisementSpec struct {
	IPAddressPools         []string                       `json:"ipAddressPools,omitempty"`
	IPAddressPoolSelectors []metav1.LabelSelector         `json:"ipAddressPoolSelectors,omitempty"`
	NodeSelectors          []metav1.LabelSelector         `json:"nodeSelectors,omitempty"`
	ServiceSelectors       []metav1.LabelSelector         `json:"serviceSelectors,omitempty"`
	Interfaces             []string                       `json:"interfaces,omitempty"`
	PreferredNodeSelectors []metallbPreferredNodeSelector `json:"preferredNodeSelectors,omitempty"`
}

type metallbPreferredNodeSelector struct {
	Weight     int32                `json:"weight"`
	Preference metav1.LabelSelector `json:"preference"`
}

type metallbBGPAdvertisementSpec struct {
	AggregationLength      *int32                 `json:"aggregationLength,omitempty"`
	AggregationLengthV6    *int32                 `json:"aggregationLengthV6,omitempty"`
	LocalPref              uint32                 `json:"localPref,omitempty"`
	Communities            []string               `json:"communities,omitempty"`
	IPAddressPools         []string               `json:"ipAddressPools,omitempty"`
	IPAddressPoolSelectors []metav1.LabelSelector `json:"ipAddressPoolSelectors,omitempty"`
	NodeSelectors          []metav1.LabelSelector `json:"nodeSelectors,omitempty"`
	ServiceSelectors       []metav1.LabelSelector `json:"serviceSelectors,omitempty"`
	Peers                  []string               `json:"peers,omitempty"`
}

// metallbBGPPeerSpec covers v1beta2 and v1beta1 (v1beta1's node selectors have the same shape).
type metallbBGPPeerSpec struct {
	MyASN                  uint32                 `json:"myASN"`
	PeerASN                uint32                 `json:"peerASN,omitempty"`
	DynamicASN             string                 `json:"dynamicASN,omitempty"`
	PeerAddress            string                 `json:"peerAddress,omitempty"`
	SourceAddress          string                 `json:"sourceAddress,omitempty"`
	PeerPort               uint16                 `json:"peerPort,omitempty"`
	HoldTime               *metav1.Duration       `json:"holdTime,omitempty"`
	KeepaliveTime          *metav1.Duration       `json:"keepaliveTime,omitempty"`
	ConnectTime            *metav1.Duration       `json:"connectTime,omitempty"`
	RouterID               string                 `json:"routerID,omitempty"`
	NodeSelectors          []metav1.LabelSelector `json:"nodeSelectors,omitempty"`
	Password               string                 `json:"password,omitempty"`
	PasswordSecret         metallbSecretReference `json:"passwordSecret,omitempty"`
	BFDProfile             string                 `json:"bfdProfile,omitempty"`
	EnableGracefulRestart  bool                   `json:"enableGracefulRestart,omitempty"`
	EBGPMultiHop           bool                   `json:"ebgpMultiHop,omitempty"`
	VRFName                string                 `json:"vrf,omitempty"`
	DisableMP              bool                   `json:"disableMP,omitempty"`
	DualStackAddressFamily bool                   `json:"dualStackAddressFamily,omitempty"`
	Interface              string                 `json:"interface,omitempty"`
}

type metallbSecretReference struct {
	Name      string `json:"name,omitempty"`
	Namespace string `json:"namespace,omitempty"`
}

type metallbCommunitySpec struct {
	Communities []metallbCommunityAlias `json:"communities,omitempty"`
}

type metallbCommunityAlias struct {
	Name  string `json:"name,omitempty"`
	Value string `json:"value,omitempty"`
}

type metallbBFDProfileSpec struct {
	ReceiveInterval  *uint32 `json:"receiveInterval,omitempty"`
	TransmitInterval *uint32 `json:"transmitInterval,omitempty"`
	DetectMultiplier *uint32 `json:"detectMultiplier,omitempty"`
	EchoInterval     *uint32 `json:"echoInterval,omitempty"`
	EchoMode         *bool   `json:"echoMode,omitempty"`
	PassiveMode      *bool   `json:"passiveMode,omitempty"`
	MinimumTTL       *uint32 `json:"minimumTtl,omitempty"`
}
