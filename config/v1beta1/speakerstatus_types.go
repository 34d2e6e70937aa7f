package v1beta1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SpeakerStatus reports what one node's speaker is doing. It is named after the node and written
// only by that node's speaker; the controller reads them all to set each Service's
// herald.io/Announced condition.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=spk
// +kubebuilder:printcolumn:name="Announced",type=integer,JSONPath=`.status.announcedIPs`
// +kubebuilder:printcolumn:name="BGP Up",type=integer,JSONPath=`.status.bgpSessionsUp`
// +kubebuilder:printcolumn:name="BGP Total",type=integer,JSONPath=`.status.bgpSessionsTotal`
// +kubebuilder:printcolumn:name="Dataplane",type=string,JSONPath=`.status.dataplane.backend`
// +kubebuilder:printcolumn:name="Members",type=integer,JSONPath=`.status.membersAlive`
// +kubebuilder:printcolumn:name="Updated",type=date,JSONPath=`.status.lastUpdate`
type SpeakerStatus struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Status SpeakerStatusStatus `json:"status,omitempty"`
}

// SpeakerStatusStatus is one node's announcements, sessions and data plane.
type SpeakerStatusStatus struct {
	// LastUpdate is when the speaker last wrote this status.
	// +optional
	LastUpdate *metav1.Time `json:"lastUpdate,omitempty"`

	// AnnouncedIPs counts this node's announcements (all of them, also beyond the listed ones).
	AnnouncedIPs int32 `json:"announcedIPs"`
	// BGPListing says which BGP announcements are listed. Deviations: only those of
	// externalTrafficPolicy: Local Services (they follow this node's endpoints), the others
	// being derived by readers from the sessions, the BGPAdvertisements and the Nodes' labels
	// (bgpconfig.Announcers), less bgpDeviations and everything when bgpWithheld is set.
	// Absent: an older speaker's status, listing every IP it advertises.
	// +optional
	BGPListing BGPListing `json:"bgpListing,omitempty"`
	// BGPWithheld says why this node advertises no Service IP by BGP at all, though sessions
	// may be up (the node is labelled to be excluded from load balancers; a cordon is no exclusion); empty
	// when it advertises.
	// +optional
	BGPWithheld string `json:"bgpWithheld,omitempty"`
	// BGPDeviationsTotal counts this node's deviations (also beyond the listed ones).
	// +optional
	BGPDeviationsTotal int32 `json:"bgpDeviationsTotal,omitempty"`
	// BGPDeviations: IPs this node's BGP translation selects for an Established session but that
	// it does not advertise, with the reason, sorted by IP; at most MaxListedDeviations. Empty
	// at steady state.
	// +listType=atomic
	// +optional
	BGPDeviations []BGPDeviation `json:"bgpDeviations,omitempty"`
	// Announcements: each IP this node makes reachable, and how, sorted by IP; at most
	// MaxListedAnnouncements are listed (announcedIPs has the total). Written at most every
	// few seconds on a node with many IPs (see the speaker's statusLoop).
	// Atomic: only the node's speaker writes it, and as a map-list with thousands of keys its
	// managed fields cost the API server more than the list itself.
	// +listType=atomic
	// +optional
	Announcements []Announcement `json:"announcements,omitempty"`

	// BGPSessionsUp and BGPSessionsTotal count the entries of bgpSessions.
	BGPSessionsUp    int32 `json:"bgpSessionsUp"`
	BGPSessionsTotal int32 `json:"bgpSessionsTotal"`
	// BGPSessions: one per BGPPeer this node peers with.
	// +listType=map
	// +listMapKey=peer
	// +optional
	BGPSessions []BGPSessionStatus `json:"bgpSessions,omitempty"`

	// MembersAlive counts the speakers (this one included) this node hears from.
	// +optional
	MembersAlive int32 `json:"membersAlive,omitempty"`

	// Dataplane is the embedded service proxy's state on this node.
	// +optional
	Dataplane DataplaneStatus `json:"dataplane,omitempty"`

	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// AnnouncementProtocol is how an IP is made reachable.
// +kubebuilder:validation:Enum=L2;BGP
type AnnouncementProtocol string

const (
	ProtocolL2  AnnouncementProtocol = "L2"
	ProtocolBGP AnnouncementProtocol = "BGP"
)

// BGPListing is what a SpeakerStatus lists of its BGP announcements.
// +kubebuilder:validation:Enum=Deviations
type BGPListing string

// BGPListingDeviations: the status lists the BGP IPs of externalTrafficPolicy: Local Services
// and the deviations only.
const BGPListingDeviations BGPListing = "Deviations"

// MaxListedDeviations bounds SpeakerStatus's bgpDeviations: at steady state the list is empty,
// and a node that cannot advertise more than this many IPs is counted as advertising none of
// the derived ones (readers cannot tell which).
const MaxListedDeviations = 100

// BGPDeviation is one IP the node's translation selects for an Established session that the
// node does not advertise.
type BGPDeviation struct {
	IP string `json:"ip"`
	// Reason: why (the route was refused, and the error).
	Reason string `json:"reason"`
}

// MaxListedAnnouncements bounds SpeakerStatus's announcements, so that the object stays far below
// etcd's request size limit (1.5 MiB) however many Services there are: at about 100 bytes an entry,
// 10,000 entries are about 1 MB.
const MaxListedAnnouncements = 10000

// StatusWriteSpacing is the least time a speaker leaves between two writes of its SpeakerStatus
// when it lists `listed` announcements: 10 ms per listed IP, at least 0.5 s, at most 10 s. Every
// write sends the whole object to the API server and to every watcher, so its cost grows with the
// list. It is also how far apart two nodes' statuses can tell of one Service's announcement.
func StatusWriteSpacing(listed int) time.Duration {
	return min(max(500*time.Millisecond, time.Duration(listed)*10*time.Millisecond), 10*time.Second)
}

// Announcement is one IP this node announces. The Services using it are the ones with the IP in
// their status.loadBalancer.ingress (heraldctl status joins the two).
type Announcement struct {
	IP       string               `json:"ip"`
	Protocol AnnouncementProtocol `json:"protocol"`
	// Interfaces answering ARP/NDP (L2).
	// +optional
	Interfaces []string `json:"interfaces,omitempty"`
	// Peers the route is advertised to (BGP), by BGPPeer name.
	// +optional
	Peers []string `json:"peers,omitempty"`
	// Since when this node announces the IP.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
}

// BGPSessionStatus is one BGP session of this node.
type BGPSessionStatus struct {
	// Peer is the BGPPeer's name.
	Peer        string `json:"peer"`
	PeerAddress string `json:"peerAddress"`
	// State is the BGP FSM state: Idle, Connect, Active, OpenSent, OpenConfirm, Established.
	State string `json:"state"`
	// BFDState: Up, Down, Init, AdminDown; empty without BFD.
	// +optional
	BFDState string `json:"bfdState,omitempty"`
	// Since the session entered State.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
	// LastError says why a session is not established, and what to check.
	// +optional
	LastError string `json:"lastError,omitempty"`
}

// DataplaneStatus is the embedded service proxy's state.
type DataplaneStatus struct {
	// Backend: ipvs, nftables, userspace, or off.
	// +optional
	Backend string `json:"backend,omitempty"`
	// Reason the backend was chosen (e.g. "kube-proxy rules present", "kernel has no ip_vs").
	// +optional
	Reason string `json:"reason,omitempty"`
	// Services programmed.
	// +optional
	Services int32 `json:"services,omitempty"`
	// UserspaceServices are the Service ports ("namespace/name/protocol/port") whose traffic
	// goes through the userspace proxy (herald.io/proxy-mode: userspace), sorted; at most
	// MaxUserspaceServicesListed, userspaceServicesTotal has the count.
	// +optional
	// +listType=atomic
	UserspaceServices []string `json:"userspaceServices,omitempty"`
	// UserspaceServicesTotal is how many Service ports the userspace proxy serves.
	// +optional
	UserspaceServicesTotal int32 `json:"userspaceServicesTotal,omitempty"`
}

// MaxUserspaceServicesListed caps DataplaneStatus.UserspaceServices, like the announcements.
const MaxUserspaceServicesListed = 1000

// SpeakerStatusList is a list of SpeakerStatuses.
//
// +kubebuilder:object:root=true
type SpeakerStatusList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []SpeakerStatus `json:"items"`
}
