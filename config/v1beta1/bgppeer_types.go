package v1beta1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// BGPPeer is a router the speakers open BGP sessions with.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=bgpp
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.spec.peerAddress`
// +kubebuilder:printcolumn:name="ASN",type=integer,JSONPath=`.spec.peerASN`
// +kubebuilder:printcolumn:name="My ASN",type=integer,JSONPath=`.spec.myASN`
// +kubebuilder:printcolumn:name="BFD",type=string,JSONPath=`.spec.bfdProfile`
// +kubebuilder:printcolumn:name="Valid",type=string,JSONPath=`.status.conditions[?(@.type=="Valid")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BGPPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec BGPPeerSpec `json:"spec"`
	// Status is written by the controller: Valid (False names a missing secret or BFD profile),
	// NotSupported. Per-node session state is in each SpeakerStatus.
	Status ConditionsStatus `json:"status,omitempty"`
}

// BGPPeerSpec describes one BGP session per selected node.
//
// +kubebuilder:validation:XValidation:rule="has(self.peerASN) != has(self.dynamicASN)",message="set exactly one of peerASN and dynamicASN"
// +kubebuilder:validation:XValidation:rule="!has(self.password) || !has(self.passwordSecret)",message="set password or passwordSecret, not both"
// +kubebuilder:validation:XValidation:rule="!has(self.keepaliveTime) || !has(self.holdTime) || duration(self.keepaliveTime) < duration(self.holdTime)",message="keepaliveTime must be shorter than holdTime"
type BGPPeerSpec struct {
	// MyASN is the nodes' autonomous system number.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	MyASN int64 `json:"myASN"`

	// PeerASN is the router's autonomous system number.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	// +optional
	PeerASN int64 `json:"peerASN,omitempty"`

	// DynamicASN accepts whatever ASN the peer opens with: "internal" (same as myASN) or "external".
	// +kubebuilder:validation:Enum=internal;external
	// +optional
	DynamicASN string `json:"dynamicASN,omitempty"`

	// PeerAddress is the router's IPv4 or IPv6 address.
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="must be an IPv4 or IPv6 address"
	PeerAddress string `json:"peerAddress"`

	// PeerPort is the router's TCP port.
	// +kubebuilder:default=179
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	PeerPort int32 `json:"peerPort,omitempty"`

	// SourceAddress is the local address sessions are opened from; by default the kernel chooses.
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="must be an IPv4 or IPv6 address"
	// +optional
	SourceAddress string `json:"sourceAddress,omitempty"`

	// RouterID is the BGP identifier (an IPv4 address); by default the node's IPv4 address.
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:XValidation:rule="isIP(self) && ip(self).family() == 4",message="must be an IPv4 address"
	// +optional
	RouterID string `json:"routerID,omitempty"`

	// HoldTime: the session drops when nothing is heard for this long (default 90s; 0 or >= 3s).
	// With BFD, failures are detected far sooner.
	// +optional
	HoldTime *metav1.Duration `json:"holdTime,omitempty"`

	// KeepaliveTime between keepalives (default a third of holdTime).
	// +optional
	KeepaliveTime *metav1.Duration `json:"keepaliveTime,omitempty"`

	// ConnectTime between attempts to open the session.
	// +optional
	ConnectTime *metav1.Duration `json:"connectTime,omitempty"`

	// EBGPMultiHop allows an eBGP peer more than one hop away.
	// +optional
	EBGPMultiHop bool `json:"ebgpMultiHop,omitempty"`

	// Password for TCP-MD5 authentication, in clear text. Prefer passwordSecret.
	// +kubebuilder:validation:MaxLength=80
	// +optional
	Password string `json:"password,omitempty"`

	// PasswordSecret names a Secret of type kubernetes.io/basic-auth whose "password" key holds the
	// TCP-MD5 password.
	// +optional
	PasswordSecret *SecretReference `json:"passwordSecret,omitempty"`

	// NodeSelectors select the nodes that open a session with this peer. Empty: every node.
	// +optional
	NodeSelectors []metav1.LabelSelector `json:"nodeSelectors,omitempty"`

	// BFDProfile names a BFDProfile; set, the session is watched by BFD.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	BFDProfile string `json:"bfdProfile,omitempty"`

	// EnableGracefulRestart keeps the router forwarding to a restarting speaker until it is back
	// (RFC 4724), instead of withdrawing its routes at once.
	// +optional
	EnableGracefulRestart bool `json:"enableGracefulRestart,omitempty"`

	// VRF is MetalLB-FRR's per-VRF peering. Accepted for migration, not implemented yet: the object
	// gets a NotSupported condition.
	// +kubebuilder:validation:MaxLength=15
	// +optional
	VRF string `json:"vrf,omitempty"`
}

// SecretReference names a Secret.
type SecretReference struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Namespace of the Secret; by default the namespace Herald runs in.
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Namespace string `json:"namespace,omitempty"`
}

// BGPPeerList is a list of BGPPeers.
//
// +kubebuilder:object:root=true
type BGPPeerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPPeer `json:"items"`
}

// Community defines named BGP communities, so advertisements can say "no-advertise" rather than
// "65535:65282".
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Community struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec CommunitySpec `json:"spec,omitempty"`
}

// CommunitySpec lists aliases.
type CommunitySpec struct {
	// +kubebuilder:validation:MaxItems=256
	// +listType=map
	// +listMapKey=name
	// +optional
	Communities []CommunityAlias `json:"communities,omitempty"`
}

// CommunityAlias names one community value.
type CommunityAlias struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
	// Value: standard "a:b" (each 0-65535) or large "large:a:b:c" (each 0-4294967295).
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^([0-9]{1,5}:[0-9]{1,5}|large:[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10})$`
	Value string `json:"value"`
}

// CommunityList is a list of Communities.
//
// +kubebuilder:object:root=true
type CommunityList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Community `json:"items"`
}

// BFDProfile sets Bidirectional Forwarding Detection timers for the BGP sessions that name it.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster
// +kubebuilder:printcolumn:name="RX ms",type=integer,JSONPath=`.spec.receiveInterval`
// +kubebuilder:printcolumn:name="TX ms",type=integer,JSONPath=`.spec.transmitInterval`
// +kubebuilder:printcolumn:name="Multiplier",type=integer,JSONPath=`.spec.detectMultiplier`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BFDProfile struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec BFDProfileSpec `json:"spec,omitempty"`
	// Status is written by the controller: Valid, NotSupported (echo mode).
	Status ConditionsStatus `json:"status,omitempty"`
}

// BFDProfileSpec holds BFD timers. A session is declared down after detectMultiplier intervals
// without a packet.
type BFDProfileSpec struct {
	// ReceiveInterval: the shortest interval, in milliseconds, this node wants packets at.
	// +kubebuilder:default=300
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=60000
	// +optional
	ReceiveInterval *int32 `json:"receiveInterval,omitempty"`

	// TransmitInterval: the shortest interval, in milliseconds, this node sends packets at.
	// +kubebuilder:default=300
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=60000
	// +optional
	TransmitInterval *int32 `json:"transmitInterval,omitempty"`

	// DetectMultiplier: packets missed before the session is declared down.
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=2
	// +kubebuilder:validation:Maximum=255
	// +optional
	DetectMultiplier *int32 `json:"detectMultiplier,omitempty"`

	// PassiveMode: wait for the peer to start the session.
	// +optional
	PassiveMode bool `json:"passiveMode,omitempty"`

	// MinimumTTL of received packets, for multi-hop sessions (single-hop always requires 255).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=254
	// +optional
	MinimumTTL *int32 `json:"minimumTtl,omitempty"`

	// EchoMode and EchoInterval are MetalLB-FRR's BFD echo. Accepted for migration, not
	// implemented: the object gets a NotSupported condition.
	// +optional
	EchoMode bool `json:"echoMode,omitempty"`
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=60000
	// +optional
	EchoInterval *int32 `json:"echoInterval,omitempty"`
}

// BFDProfileList is a list of BFDProfiles.
//
// +kubebuilder:object:root=true
type BFDProfileList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BFDProfile `json:"items"`
}
